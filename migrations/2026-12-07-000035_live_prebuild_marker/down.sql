DROP TRIGGER workspace_builds_mark_prebuilds ON workspace_builds;
DROP FUNCTION poolkeeper_mark_prebuilds();
ALTER TABLE workspaces DROP COLUMN prebuild_preset_id;
