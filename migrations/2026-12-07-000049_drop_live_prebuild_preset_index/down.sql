CREATE INDEX CONCURRENTLY workspace_builds_prebuild_live_idx
    ON workspace_builds (preset_id) WHERE prebuild_live;
