-- Notification outbox, audit log, runtime settings, and the NOTIFY triggers that wake
-- provisioners and the prebuild reconciler.

CREATE TABLE notifications (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind       text        NOT NULL CHECK (kind <> ''),
    -- The same event enqueued twice (a retried cycle) is one notification.
    dedupe_key text        NOT NULL UNIQUE,
    payload    jsonb       NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz NULL
);
CREATE INDEX notifications_unsent_idx ON notifications (created_at) WHERE sent_at IS NULL;

CREATE TABLE audit_log (
    id            bigserial   PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    -- NULL for the daemon's own loops; `actor` then names the loop.
    actor_id      uuid        NULL REFERENCES users (id) ON DELETE SET NULL,
    actor         text        NOT NULL,
    action        text        NOT NULL,
    resource_type text        NOT NULL,
    resource_id   uuid        NULL,
    diff          jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_resource_idx ON audit_log (resource_type, resource_id, at);
CREATE INDEX audit_log_at_idx ON audit_log (at);

CREATE TABLE settings (
    key        text        PRIMARY KEY,
    value      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO settings (key, value) VALUES ('reconciliation_paused', 'false');

-- NOTIFY is delivered at commit, so a provisioner never hears of a job it cannot see yet
-- (DESIGN "Data flow"). The payload is the job id; a job is announced when it becomes
-- pending (work to take) or canceling (its worker should stop).
CREATE FUNCTION poolkeeper_notify_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('poolkeeper_jobs', NEW.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER provisioner_jobs_notify_job
    AFTER INSERT OR UPDATE OF status ON provisioner_jobs
    FOR EACH ROW WHEN (NEW.status IN ('pending', 'canceling'))
    EXECUTE FUNCTION poolkeeper_notify_job();

-- Wakes the prebuild reconciler when its inputs change. The payload (the table name) is
-- informational: any notification means "reconcile soon". The reconciler's own status
-- writes (prebuild_status, last_error) are deliberately not listed, so it does not wake itself.
CREATE FUNCTION poolkeeper_notify_presets() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('poolkeeper_presets', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

CREATE TRIGGER presets_notify_presets
    AFTER INSERT OR DELETE OR UPDATE OF desired_instances, expiration_ttl_secs,
        scheduling_timezone, schedule_lead_secs, invalidated_at ON presets
    FOR EACH STATEMENT EXECUTE FUNCTION poolkeeper_notify_presets();

CREATE TRIGGER preset_schedules_notify_presets
    AFTER INSERT OR UPDATE OR DELETE ON preset_schedules
    FOR EACH STATEMENT EXECUTE FUNCTION poolkeeper_notify_presets();

CREATE TRIGGER templates_notify_presets
    AFTER UPDATE OF active_version_id, deleted, deprecation_message ON templates
    FOR EACH STATEMENT EXECUTE FUNCTION poolkeeper_notify_presets();

CREATE TRIGGER settings_notify_presets
    AFTER INSERT OR UPDATE OR DELETE ON settings
    FOR EACH STATEMENT EXECUTE FUNCTION poolkeeper_notify_presets();

-- A finished prebuild job changes the pool (a new ready instance, or a failure for backoff).
CREATE TRIGGER provisioner_jobs_notify_presets
    AFTER UPDATE OF status ON provisioner_jobs
    FOR EACH ROW WHEN (NEW.for_prebuild AND NEW.status IN ('succeeded', 'failed', 'canceled'))
    EXECUTE FUNCTION poolkeeper_notify_presets();
