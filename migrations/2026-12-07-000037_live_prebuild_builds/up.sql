-- A claim's candidates are the live prebuilds of one preset. They used to be found through
-- every build of the preset, and people's builds carry their preset too, so that range grew
-- with every claimed workspace's history. `prebuild_live` marks the start build of a prebuild
-- while the prebuild may still be claimed: set as the build is inserted (a BEFORE trigger: no
-- extra write), cleared by the claim's hand-over and when the prebuild's delete completes. It
-- only narrows the search (the next migration indexes it); the claim still checks the
-- workspace's owner, its latest build and its job.
ALTER TABLE workspace_builds ADD COLUMN prebuild_live boolean NOT NULL DEFAULT false;

CREATE FUNCTION poolkeeper_prebuild_live() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.prebuild_live := NEW.initiator_id = 'c42fdf75-3097-471c-8c33-fb52454d81c0'
                         AND NEW.transition = 'start' AND NEW.preset_id IS NOT NULL;
    RETURN NEW;
END
$$;

CREATE TRIGGER workspace_builds_prebuild_live
    BEFORE INSERT ON workspace_builds
    FOR EACH ROW EXECUTE FUNCTION poolkeeper_prebuild_live();

-- The prebuilds that exist already: the latest build of each live one, when it is a start.
UPDATE workspace_builds b
   SET prebuild_live = true
  FROM workspaces w
 WHERE w.id = b.workspace_id
   AND w.owner_id = 'c42fdf75-3097-471c-8c33-fb52454d81c0' AND NOT w.deleted
   AND b.transition = 'start' AND b.preset_id IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM workspace_builds later
                    WHERE later.workspace_id = b.workspace_id
                      AND later.build_number > b.build_number);
