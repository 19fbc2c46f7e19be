-- A claim's page of candidates (see the previous migration): the preset's claimable
-- prebuilds in the order they are handed out. It replaces the index on the preset alone,
-- which it serves as well. Built CONCURRENTLY, as its own statement: builds are inserted all
-- the time.
CREATE INDEX CONCURRENTLY workspace_builds_prebuild_order_idx
    ON workspace_builds (preset_id, prebuild_created_at, workspace_id) WHERE prebuild_live;
