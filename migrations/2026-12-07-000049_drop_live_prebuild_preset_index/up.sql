-- Superseded by the index of the claim order, whose first column is the preset.
DROP INDEX CONCURRENTLY workspace_builds_prebuild_live_idx;
