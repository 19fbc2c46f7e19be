-- The pending jobs' index with tags (the previous migration) serves acquisition and the
-- jobs gauge alike; this one would only cost every insert.
DROP INDEX CONCURRENTLY provisioner_jobs_pending_idx;
