-- Acquisition with tags: `WHERE status = 'pending' AND tags <@ $worker ORDER BY
-- queue_priority, created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED` walks this index in queue
-- order and tests each job's tags from the index itself, so a worker skips the jobs it may
-- not take without reading them. Replaces provisioner_jobs_pending_idx (dropped next).
-- Built CONCURRENTLY: every build inserts a job.
CREATE INDEX CONCURRENTLY provisioner_jobs_pending_tags_idx
    ON provisioner_jobs (queue_priority, created_at, id) INCLUDE (tags) WHERE status = 'pending';
