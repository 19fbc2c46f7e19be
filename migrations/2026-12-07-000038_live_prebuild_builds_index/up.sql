-- A claim's candidates (see the previous migration): only the start builds of prebuilds that
-- may still be claimed are in it, so it stays as small as the pools however long the history
-- of builds grows. Built CONCURRENTLY, as its own statement: builds are inserted all the time.
CREATE INDEX CONCURRENTLY workspace_builds_prebuild_live_idx
    ON workspace_builds (preset_id) WHERE prebuild_live;
