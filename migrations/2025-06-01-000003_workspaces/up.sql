-- Provisioner jobs, workspaces, their builds and agents. A prebuilt workspace is an ordinary
-- workspace owned by the system user `prebuilds` (DESIGN "Model").

CREATE TABLE provisioner_jobs (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid        NOT NULL REFERENCES organizations (id),
    status          text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'canceling', 'canceled')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz NULL,
    completed_at    timestamptz NULL,
    heartbeat_at    timestamptz NULL,
    worker_id       text        NULL,
    error           text        NULL,
    input           jsonb       NOT NULL DEFAULT '{}',
    cancel_cause    text        NULL,
    canceled_at     timestamptz NULL,
    -- Denormalized from the build so that acquisition never joins (see queue_priority).
    for_prebuild    boolean     NOT NULL DEFAULT false,
    transition      text        NOT NULL CHECK (transition IN ('start', 'stop', 'delete')),
    -- Acquisition order: jobs for people before prebuilds, deletes before the rest, then the
    -- oldest. 0 = person delete, 1 = person start/stop, 2 = prebuild delete, 3 = prebuild
    -- start/stop. Generated, so it cannot disagree with the two columns above.
    queue_priority  smallint    NOT NULL GENERATED ALWAYS AS (
        (CASE WHEN for_prebuild THEN 2 ELSE 0 END)
        + (CASE WHEN transition = 'delete' THEN 0 ELSE 1 END)
    ) STORED,
    -- A finished job has a completion time and an unfinished one has none.
    CONSTRAINT provisioner_jobs_completed_at_check
        CHECK ((status IN ('succeeded', 'failed', 'canceled')) = (completed_at IS NOT NULL)),
    CONSTRAINT provisioner_jobs_started_at_check
        CHECK (status <> 'running' OR started_at IS NOT NULL)
);

-- Acquisition: `WHERE status = 'pending' ORDER BY queue_priority, created_at, id
-- LIMIT 1 FOR UPDATE SKIP LOCKED` is a scan of this index.
CREATE INDEX provisioner_jobs_pending_idx
    ON provisioner_jobs (queue_priority, created_at, id) WHERE status = 'pending';
-- Finding jobs whose worker stopped sending heartbeats.
CREATE INDEX provisioner_jobs_active_heartbeat_idx
    ON provisioner_jobs (heartbeat_at) WHERE status IN ('running', 'canceling');

CREATE TABLE workspaces (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id    uuid        NOT NULL REFERENCES organizations (id),
    owner_id           uuid        NOT NULL REFERENCES users (id),
    template_id        uuid        NOT NULL REFERENCES templates (id),
    name               text        NOT NULL CHECK (name <> ''),
    -- Weekly cron, e.g. 'CRON_TZ=Europe/Berlin 30 9 * * 1-5'; NULL = no autostart.
    autostart_schedule text        NULL,
    -- 0 = no TTL (REPLAY.md).
    ttl_secs           bigint      NOT NULL DEFAULT 0 CHECK (ttl_secs >= 0),
    next_start_at      timestamptz NULL,
    last_used_at       timestamptz NOT NULL DEFAULT now(),
    dormant_at         timestamptz NULL,
    deleting_at        timestamptz NULL,
    automatic_updates  text        NOT NULL DEFAULT 'never'
        CHECK (automatic_updates IN ('never', 'always')),
    deleted            boolean     NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Names are unique per owner, case-insensitively, among live workspaces. Also the
-- "workspaces of an owner" index (the prebuild pool is the workspaces of `prebuilds`).
CREATE UNIQUE INDEX workspaces_owner_id_lower_name_key
    ON workspaces (owner_id, lower(name)) WHERE NOT deleted;
CREATE INDEX workspaces_template_id_idx ON workspaces (template_id) WHERE NOT deleted;

CREATE TABLE workspace_builds (
    id                  uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id        uuid        NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    build_number        integer     NOT NULL CHECK (build_number >= 1),
    template_version_id uuid        NOT NULL REFERENCES template_versions (id),
    -- The preset the build was made from; prebuild accounting goes by it.
    preset_id           uuid        NULL REFERENCES presets (id) ON DELETE SET NULL,
    transition          text        NOT NULL CHECK (transition IN ('start', 'stop', 'delete')),
    -- initiator, autostart, autostop, failedstop, dormancy, autodelete, prebuild, claim, ...
    -- (BuildReason in shell/src/db/enums.rs); kept open so a new reason needs no migration.
    reason              text        NOT NULL CHECK (reason ~ '^[a-z_]+$'),
    initiator_id        uuid        NOT NULL REFERENCES users (id),
    job_id              uuid        NOT NULL UNIQUE REFERENCES provisioner_jobs (id),
    deadline            timestamptz NULL,
    max_deadline        timestamptz NULL,
    provisioner_state   bytea       NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT workspace_builds_deadline_check
        CHECK (deadline IS NULL OR max_deadline IS NULL OR deadline <= max_deadline)
);

-- One index for both the uniqueness of build numbers and "latest build per workspace"
-- (`DISTINCT ON (workspace_id) ... ORDER BY workspace_id, build_number DESC`).
CREATE UNIQUE INDEX workspace_builds_workspace_id_build_number_key
    ON workspace_builds (workspace_id, build_number DESC);
-- Recent builds of a preset (prebuild backoff and hard limit, SPEC §4).
CREATE INDEX workspace_builds_preset_id_created_at_idx
    ON workspace_builds (preset_id, created_at DESC) WHERE preset_id IS NOT NULL;

CREATE TABLE workspace_agents (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    build_id        uuid        NOT NULL REFERENCES workspace_builds (id) ON DELETE CASCADE,
    name            text        NOT NULL CHECK (name <> ''),
    lifecycle_state text        NOT NULL DEFAULT 'created'
        CHECK (lifecycle_state IN ('created', 'starting', 'ready', 'start_error', 'shutting_down', 'off')),
    auth_token_hash text        NULL UNIQUE,
    ready_at        timestamptz NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- Also the "agents of a build" index.
    UNIQUE (build_id, name)
);
