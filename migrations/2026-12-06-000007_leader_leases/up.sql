-- Leadership of each daemon loop as an expiring lease (the Kubernetes Lease model) instead
-- of a session advisory lock: a leader whose database path hangs keeps its session, and so
-- its lock, forever; a lease simply runs out. `token` grows by one each time the holder
-- changes, and every write made under leadership checks holder and token in its own
-- transaction (a fenced write), so a deposed leader's late writes are refused.
CREATE TABLE leader_leases (
    loop_name   text PRIMARY KEY,
    holder      text NOT NULL,
    token       bigint NOT NULL CHECK (token > 0),
    acquired_at timestamptz NOT NULL,
    renewed_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
