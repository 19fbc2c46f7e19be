-- The prebuild snapshot and the agent flip look for agents that are not ready yet, every
-- cycle; nearly all agents are ready, so a partial index keeps that lookup small instead of
-- a scan of every agent ever created. Built CONCURRENTLY: builds insert agents all the time.
CREATE INDEX CONCURRENTLY workspace_agents_not_ready_idx
    ON workspace_agents (build_id) WHERE lifecycle_state <> 'ready';
