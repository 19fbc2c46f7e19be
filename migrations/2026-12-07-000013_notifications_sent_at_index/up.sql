-- The retention purge (rules §5) deletes notifications delivered before a cutoff, oldest
-- first, in small batches. Built CONCURRENTLY: changes write notifications all the time.
CREATE INDEX CONCURRENTLY notifications_sent_at_idx
    ON notifications (sent_at) WHERE sent_at IS NOT NULL;
