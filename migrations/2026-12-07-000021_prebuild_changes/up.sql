-- The prebuild reconciler's change feed (docs/rules.md §8). Every write that can change a
-- preset's part of the prebuild snapshot records what it touched, in the same transaction,
-- with that transaction's id. The reconciler reads the rows written by transactions that
-- committed since its last read; a transaction's id is taken before it commits, so rows are
-- read by transaction id against snapshot bounds, never by insertion order (ids of
-- transactions that commit out of order would be skipped).
CREATE TABLE prebuild_changes (
    id        bigserial NOT NULL,
    -- The writing transaction's id (64-bit, never wraps), as a number.
    xid       bigint    NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    -- 'workspace': reload that workspace's builds; 'preset': reload that preset's row and
    -- schedules; 'template': something every preset of a template reads changed (its
    -- active version, deletion, deprecation, a name): reload everything.
    kind      text      NOT NULL CHECK (kind IN ('workspace', 'preset', 'template')),
    target_id uuid      NOT NULL,
    PRIMARY KEY (xid, id)
);

CREATE FUNCTION poolkeeper_change_workspace() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_ record;
BEGIN
    IF TG_OP = 'DELETE' THEN row_ := OLD; ELSE row_ := NEW; END IF;
    IF TG_TABLE_NAME = 'workspaces' THEN
        INSERT INTO prebuild_changes (kind, target_id) VALUES ('workspace', row_.id);
    ELSIF TG_TABLE_NAME = 'workspace_builds' THEN
        INSERT INTO prebuild_changes (kind, target_id) VALUES ('workspace', row_.workspace_id);
        -- A build that goes or loses its preset may have been that preset's claim: the
        -- workspace's remaining builds no longer say which preset to look at.
        IF TG_OP <> 'INSERT' AND OLD.preset_id IS NOT NULL THEN
            INSERT INTO prebuild_changes (kind, target_id) VALUES ('preset', OLD.preset_id);
        END IF;
    ELSIF TG_TABLE_NAME = 'provisioner_jobs' THEN
        INSERT INTO prebuild_changes (kind, target_id)
        SELECT 'workspace', b.workspace_id FROM workspace_builds b WHERE b.job_id = row_.id;
    ELSIF TG_TABLE_NAME = 'workspace_agents' THEN
        INSERT INTO prebuild_changes (kind, target_id)
        SELECT 'workspace', b.workspace_id FROM workspace_builds b WHERE b.id = row_.build_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION poolkeeper_change_preset() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_ record;
BEGIN
    IF TG_OP = 'DELETE' THEN row_ := OLD; ELSE row_ := NEW; END IF;
    IF TG_TABLE_NAME = 'presets' THEN
        INSERT INTO prebuild_changes (kind, target_id) VALUES ('preset', row_.id);
    ELSE
        INSERT INTO prebuild_changes (kind, target_id) VALUES ('preset', row_.preset_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION poolkeeper_change_template() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO prebuild_changes (kind, target_id) VALUES ('template', NEW.id);
    RETURN NULL;
END
$$;

-- Only the columns the snapshot reads: activity, deadlines and heartbeats write no change.
CREATE TRIGGER workspaces_prebuild_change
    AFTER INSERT OR DELETE OR UPDATE OF owner_id, deleted, created_at ON workspaces
    FOR EACH ROW EXECUTE FUNCTION poolkeeper_change_workspace();

CREATE TRIGGER workspace_builds_prebuild_change
    AFTER INSERT OR DELETE OR UPDATE OF workspace_id, build_number, template_version_id,
        preset_id, transition, created_at, job_id, initiator_id ON workspace_builds
    FOR EACH ROW EXECUTE FUNCTION poolkeeper_change_workspace();

CREATE TRIGGER provisioner_jobs_prebuild_change
    AFTER DELETE OR UPDATE OF status, failure_kind ON provisioner_jobs
    FOR EACH ROW EXECUTE FUNCTION poolkeeper_change_workspace();

CREATE TRIGGER workspace_agents_prebuild_change
    AFTER INSERT OR DELETE OR UPDATE OF lifecycle_state, build_id ON workspace_agents
    FOR EACH ROW EXECUTE FUNCTION poolkeeper_change_workspace();

CREATE TRIGGER presets_prebuild_change
    AFTER INSERT OR DELETE OR UPDATE ON presets
    FOR EACH ROW EXECUTE FUNCTION poolkeeper_change_preset();

CREATE TRIGGER preset_schedules_prebuild_change
    AFTER INSERT OR DELETE OR UPDATE ON preset_schedules
    FOR EACH ROW EXECUTE FUNCTION poolkeeper_change_preset();

CREATE TRIGGER templates_prebuild_change
    AFTER UPDATE OF active_version_id, deleted, deprecation_message, name ON templates
    FOR EACH ROW EXECUTE FUNCTION poolkeeper_change_template();

CREATE TRIGGER organizations_prebuild_change
    AFTER UPDATE OF name ON organizations
    FOR EACH ROW EXECUTE FUNCTION poolkeeper_change_template();
