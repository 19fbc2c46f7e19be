-- The preset a live prebuild was built from, on the workspace itself, so that a claim finds a
-- preset's prebuilds in an index over live prebuilds only (the next migration) instead of
-- walking every build ever made from the preset: people's builds carry the preset too, and
-- their history only grows. NULL for every workspace that is not a live prebuild; the claim's
-- hand-over clears it. A hint that narrows the search: the claim still checks the latest
-- build (preset, transition, job status) of every workspace it finds.
ALTER TABLE workspaces ADD COLUMN prebuild_preset_id uuid NULL;

-- Set by the database, whichever path inserts the build (the reconciler, a test's seed):
-- once per statement, over the start builds with a preset it inserted for workspaces of the
-- `prebuilds` system user.
CREATE FUNCTION poolkeeper_mark_prebuilds() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE workspaces w
       SET prebuild_preset_id = b.preset_id
      FROM new_builds b
     WHERE w.id = b.workspace_id
       AND b.transition = 'start' AND b.preset_id IS NOT NULL
       AND w.owner_id = 'c42fdf75-3097-471c-8c33-fb52454d81c0'
       AND w.prebuild_preset_id IS DISTINCT FROM b.preset_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER workspace_builds_mark_prebuilds
    AFTER INSERT ON workspace_builds
    REFERENCING NEW TABLE AS new_builds
    FOR EACH STATEMENT EXECUTE FUNCTION poolkeeper_mark_prebuilds();

-- The prebuilds that exist already: the preset of each one's latest start build.
UPDATE workspaces w
   SET prebuild_preset_id = latest.preset_id
  FROM (SELECT DISTINCT ON (workspace_id) workspace_id, preset_id
          FROM workspace_builds
         WHERE transition = 'start' AND preset_id IS NOT NULL
         ORDER BY workspace_id, build_number DESC) latest
 WHERE w.id = latest.workspace_id
   AND w.owner_id = 'c42fdf75-3097-471c-8c33-fb52454d81c0'
   AND NOT w.deleted;
