-- Templates, their versions, and the presets (prebuild pools) declared by a version.

CREATE TABLE templates (
    id                               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id                  uuid        NOT NULL REFERENCES organizations (id),
    name                             text        NOT NULL CHECK (name <> ''),
    -- FK added below, once template_versions exists.
    active_version_id                uuid        NULL,
    deleted                          boolean     NOT NULL DEFAULT false,
    -- Non-NULL = deprecated: no new workspaces, prebuild pools drain (SPEC §4 "active").
    deprecation_message              text        NULL,
    -- Schedule options (SPEC §2, §3). 0 seconds = not set.
    default_ttl_secs                 bigint      NOT NULL DEFAULT 0 CHECK (default_ttl_secs >= 0),
    activity_bump_secs               bigint      NOT NULL DEFAULT 3600 CHECK (activity_bump_secs >= 0),
    autostop_requirement_days        text[]      NOT NULL DEFAULT '{}'
        CHECK (autostop_requirement_days <@ '{mon,tue,wed,thu,fri,sat,sun}'::text[]),
    -- Every N weeks; 0 is read as 1 (REPLAY.md).
    autostop_requirement_weeks       integer     NOT NULL DEFAULT 1 CHECK (autostop_requirement_weeks >= 0),
    autostart_days                   text[]      NOT NULL DEFAULT '{mon,tue,wed,thu,fri,sat,sun}'
        CHECK (autostart_days <@ '{mon,tue,wed,thu,fri,sat,sun}'::text[]),
    user_autostart_enabled           boolean     NOT NULL DEFAULT true,
    user_autostop_enabled            boolean     NOT NULL DEFAULT true,
    failure_ttl_secs                 bigint      NOT NULL DEFAULT 0 CHECK (failure_ttl_secs >= 0),
    time_til_dormant_secs            bigint      NOT NULL DEFAULT 0 CHECK (time_til_dormant_secs >= 0),
    time_til_dormant_autodelete_secs bigint      NOT NULL DEFAULT 0
        CHECK (time_til_dormant_autodelete_secs >= 0),
    require_active_version           boolean     NOT NULL DEFAULT false,
    created_at                       timestamptz NOT NULL DEFAULT now(),
    updated_at                       timestamptz NOT NULL DEFAULT now(),
    -- Not partial on `deleted`: `templates apply` upserts by name (ON CONFLICT needs a plain
    -- unique constraint), and re-applying a deleted template's name revives it.
    UNIQUE (organization_id, name)
);

CREATE TABLE template_versions (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    template_id uuid        NOT NULL REFERENCES templates (id) ON DELETE CASCADE,
    name        text        NOT NULL CHECK (name <> ''),
    message     text        NOT NULL DEFAULT '',
    provisioner text        NOT NULL CHECK (provisioner IN ('simulated', 'terraform')),
    -- Backend configuration: for terraform the module directory, for simulated the build
    -- durations and failure rate. Its shape is validated by the provisioner at the edge.
    source      jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(source) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (template_id, name),
    -- Target of the composite FK below (a template's active version is one of its own).
    UNIQUE (template_id, id)
);

-- Deferred so that a template and its first (active) version can be inserted in either
-- order inside one transaction.
ALTER TABLE templates
    ADD CONSTRAINT templates_active_version_fkey
    FOREIGN KEY (id, active_version_id) REFERENCES template_versions (template_id, id)
    DEFERRABLE INITIALLY DEFERRED;

CREATE TABLE presets (
    id                  uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    template_version_id uuid        NOT NULL REFERENCES template_versions (id) ON DELETE CASCADE,
    name                text        NOT NULL CHECK (name <> ''),
    -- NULL = no prebuild pool for this preset.
    desired_instances   integer     NULL CHECK (desired_instances >= 0),
    -- 0 = prebuilds never expire.
    expiration_ttl_secs bigint      NOT NULL DEFAULT 0 CHECK (expiration_ttl_secs >= 0),
    -- IANA zone of the schedule windows; '' = UTC. Validated at the edge (SPEC §4).
    scheduling_timezone text        NOT NULL DEFAULT '',
    schedule_lead_secs  bigint      NOT NULL DEFAULT 0 CHECK (schedule_lead_secs >= 0),
    -- Prebuilds created before this instant count as expired.
    invalidated_at      timestamptz NULL,
    prebuild_status     text        NOT NULL DEFAULT 'healthy'
        CHECK (prebuild_status IN ('healthy', 'hard_limited', 'validation_failed')),
    last_error          text        NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- Also the "presets of a version" index.
    UNIQUE (template_version_id, name)
);

CREATE TABLE preset_parameters (
    preset_id uuid NOT NULL REFERENCES presets (id) ON DELETE CASCADE,
    name      text NOT NULL CHECK (name <> ''),
    value     text NOT NULL,
    PRIMARY KEY (preset_id, name)
);

-- Schedule windows; the first window (by position) containing `now` wins (SPEC §4).
CREATE TABLE preset_schedules (
    id        uuid    PRIMARY KEY DEFAULT gen_random_uuid(),
    preset_id uuid    NOT NULL REFERENCES presets (id) ON DELETE CASCADE,
    position  integer NOT NULL CHECK (position >= 0),
    cron      text    NOT NULL,
    instances integer NOT NULL CHECK (instances >= 0),
    UNIQUE (preset_id, position)
);
