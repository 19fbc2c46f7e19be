-- The retention purge (rules §5) looks for jobs that finished before a cutoff, oldest
-- first, in small batches; without an index each batch would scan every job ever run.
-- Built CONCURRENTLY: every build inserts a job.
CREATE INDEX CONCURRENTLY provisioner_jobs_completed_at_idx
    ON provisioner_jobs (completed_at) WHERE completed_at IS NOT NULL;
