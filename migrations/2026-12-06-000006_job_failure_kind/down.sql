ALTER TABLE provisioner_jobs DROP COLUMN failure_kind;
