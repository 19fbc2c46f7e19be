-- A claim's candidates: the live prebuilds of one preset (see the previous migration). Only
-- live prebuilds are in it, so it stays as small as the pools however long the history of
-- builds grows. Built CONCURRENTLY, as its own statement: workspaces are written all the time.
CREATE INDEX CONCURRENTLY workspaces_live_prebuilds_idx
    ON workspaces (prebuild_preset_id) WHERE prebuild_preset_id IS NOT NULL AND NOT deleted;
