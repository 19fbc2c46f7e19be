-- Dashboard sign-ins. The browser holds a random session id in an HttpOnly cookie; only its
-- SHA-256 is stored, so a read of this table cannot be replayed as a cookie. A session lives
-- no longer than the API token pasted to open it: revoking the token (or deleting its user)
-- deletes the session, and every request re-checks the token's expiry and the user's status.
-- Each session has its own CSRF token, sent back with every form.
CREATE TABLE dashboard_sessions (
    id_hash    text        PRIMARY KEY,
    token_id   uuid        NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    csrf_token text        NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    CHECK (expires_at > created_at)
);
