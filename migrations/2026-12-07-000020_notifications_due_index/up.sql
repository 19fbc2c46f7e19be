-- The dispatcher's lease query (`FOR UPDATE SKIP LOCKED`) asks for the due rows that are
-- still to be delivered, earliest first: a partial index on exactly those rows keeps it
-- small however many delivered rows the outbox keeps. Built CONCURRENTLY: every loop
-- inserts into the outbox.
CREATE INDEX CONCURRENTLY notifications_due_idx
    ON notifications (next_attempt_at) WHERE status IN ('pending', 'temporary_failure');
