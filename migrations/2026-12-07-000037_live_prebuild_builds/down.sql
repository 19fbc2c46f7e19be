DROP TRIGGER workspace_builds_prebuild_live ON workspace_builds;
DROP FUNCTION poolkeeper_prebuild_live();
ALTER TABLE workspace_builds DROP COLUMN prebuild_live;
