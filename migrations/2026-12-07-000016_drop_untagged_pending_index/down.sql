CREATE INDEX CONCURRENTLY provisioner_jobs_pending_idx
    ON provisioner_jobs (queue_priority, created_at, id) WHERE status = 'pending';
