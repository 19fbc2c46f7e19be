-- `GET /api/v1/workspaces` and `workspaces list` page through live workspaces in
-- (created_at, id) order: for everyone's workspaces this keeps a page an index range instead
-- of a sort of every workspace. (One owner's few are found by the (owner_id, name) index.)
-- Built CONCURRENTLY, as its own statement: workspaces are written all the time.
CREATE INDEX CONCURRENTLY workspaces_live_created_idx
    ON workspaces (created_at, id) WHERE NOT deleted;
