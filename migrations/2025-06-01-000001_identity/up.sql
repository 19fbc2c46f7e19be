-- Organizations, users and API tokens. Enums are TEXT + CHECK: readable in psql, trivial
-- to map with diesel, and extending one is a one-line migration.

CREATE TABLE organizations (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text        NOT NULL UNIQUE CHECK (name <> ''),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Every installation has one organization to start with; the id is fixed so that code and
-- tests can name it (DEFAULT_ORGANIZATION_ID in shell/src/db/mod.rs).
INSERT INTO organizations (id, name) VALUES ('162dee20-d710-44ce-bfa3-de9096fddadf', 'default');

CREATE TABLE users (
    id                   uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    username             text        NOT NULL UNIQUE CHECK (username <> ''),
    email                text        NOT NULL DEFAULT '',
    status               text        NOT NULL DEFAULT 'active'
                                     CHECK (status IN ('active', 'suspended', 'dormant')),
    role                 text        NOT NULL DEFAULT 'member'
                                     CHECK (role IN ('owner', 'template-admin', 'member')),
    -- System users (the prebuild pool owner) cannot log in and are never notified.
    is_system            boolean     NOT NULL DEFAULT false,
    -- A daily cron such as 'CRON_TZ=Europe/Berlin 0 2 * * *'; NULL = the default (SPEC §3).
    quiet_hours_schedule text        NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- The owner of every prebuilt workspace (DESIGN "Model"): claiming a prebuild transfers
-- ownership away from this user. Fixed id, shared with Coder, so that it can be named in code.
INSERT INTO users (id, username, email, status, role, is_system)
VALUES ('c42fdf75-3097-471c-8c33-fb52454d81c0', 'prebuilds', '', 'active', 'member', true);

CREATE TABLE api_tokens (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text        NOT NULL CHECK (name <> ''),
    -- Only a hash of the secret is stored; lookups go by this column.
    secret_hash  text        NOT NULL UNIQUE,
    expires_at   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz NULL,
    UNIQUE (user_id, name)
);
