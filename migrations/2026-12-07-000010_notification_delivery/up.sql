-- Delivery of the outbox. A row is `pending` until a dispatcher sends it; a failed send is
-- `temporary_failure` (due again at `next_attempt_at`) until it succeeds or runs out of
-- attempts (`permanent_failure`); a kind its recipient switched off is `inhibited`.
-- A dispatcher leases a due row by naming itself in `leased_by` and moving
-- `next_attempt_at` to the lease's expiry: a replica that dies mid-send leaves a row that
-- is simply due again once the lease runs out. `attempts` counts leases and fences the
-- outcome (only the holder of the current attempt records it).
ALTER TABLE notifications
    ADD COLUMN status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'temporary_failure', 'permanent_failure', 'inhibited')),
    ADD COLUMN attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN leased_by text NULL,
    ADD COLUMN lease_expires_at timestamptz NULL;

UPDATE notifications SET status = 'sent' WHERE sent_at IS NOT NULL;
UPDATE notifications SET next_attempt_at = created_at;

-- Every send by every method, kept with its message (and pruned with it).
CREATE TABLE notification_attempts (
    notification_id uuid        NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    attempt         integer     NOT NULL CHECK (attempt > 0),
    method          text        NOT NULL CHECK (method IN ('webhook', 'smtp')),
    at              timestamptz NOT NULL,
    outcome         text        NOT NULL
                                CHECK (outcome IN ('sent', 'temporary_failure', 'permanent_failure', 'inhibited')),
    error           text        NULL,
    PRIMARY KEY (notification_id, attempt, method)
);

-- A kind a person switched off (or on again); no row means on.
CREATE TABLE notification_preferences (
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind       text        NOT NULL CHECK (kind ~ '^[a-z_]+$'),
    enabled    boolean     NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, kind)
);
