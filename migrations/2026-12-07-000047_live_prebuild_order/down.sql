ALTER TABLE workspace_builds DROP CONSTRAINT workspace_builds_prebuild_created_at_check;
DROP TRIGGER workspaces_prebuild_created_at ON workspaces;
DROP FUNCTION poolkeeper_prebuild_created_at();
CREATE OR REPLACE FUNCTION poolkeeper_prebuild_live() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.prebuild_live := NEW.initiator_id = 'c42fdf75-3097-471c-8c33-fb52454d81c0'
                         AND NEW.transition = 'start' AND NEW.preset_id IS NOT NULL;
    RETURN NEW;
END
$$;
ALTER TABLE workspace_builds DROP COLUMN prebuild_created_at;
