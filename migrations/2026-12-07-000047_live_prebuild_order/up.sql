-- A claim hands out a preset's prebuilds oldest first: by their workspace's creation, ties by
-- id (rules §4 "Claim choice"), and it reads them a page at a time in that order. The start
-- build that lists a prebuild as claimable (`prebuild_live`) now carries that instant too, so
-- the next migration can index the order and a page is an index range, not a sort of the
-- whole pool. Set by the same BEFORE trigger as the build is inserted; kept equal by a
-- trigger on the workspace should its creation instant ever be rewritten. The claim still
-- reads the workspace's own `created_at` for the core's choice within a page.
ALTER TABLE workspace_builds ADD COLUMN prebuild_created_at timestamptz;

CREATE OR REPLACE FUNCTION poolkeeper_prebuild_live() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.prebuild_live := NEW.initiator_id = 'c42fdf75-3097-471c-8c33-fb52454d81c0'
                         AND NEW.transition = 'start' AND NEW.preset_id IS NOT NULL;
    IF NEW.prebuild_live THEN
        -- A workspace inserted by the same statement is not visible yet: its build was
        -- created with it, at the same instant.
        NEW.prebuild_created_at := COALESCE(
            (SELECT w.created_at FROM workspaces w WHERE w.id = NEW.workspace_id),
            NEW.created_at);
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION poolkeeper_prebuild_created_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE workspace_builds SET prebuild_created_at = NEW.created_at
     WHERE workspace_id = NEW.id AND prebuild_live;
    RETURN NULL;
END
$$;

CREATE TRIGGER workspaces_prebuild_created_at
    AFTER UPDATE OF created_at ON workspaces
    FOR EACH ROW WHEN (OLD.created_at IS DISTINCT FROM NEW.created_at)
    EXECUTE FUNCTION poolkeeper_prebuild_created_at();

UPDATE workspace_builds b
   SET prebuild_created_at = w.created_at
  FROM workspaces w
 WHERE w.id = b.workspace_id AND b.prebuild_live;

ALTER TABLE workspace_builds ADD CONSTRAINT workspace_builds_prebuild_created_at_check
    CHECK (NOT prebuild_live OR prebuild_created_at IS NOT NULL);
