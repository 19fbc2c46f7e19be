-- A prebuild job's end no longer NOTIFYs the reconciler: the change feed already records it
-- (rules §8), and the reconciler looks at the feed between cycles. A NOTIFY made every
-- committing notifier wait its turn for one database-wide lock and woke every listening
-- connection of the database (each provisioner's), on every job's end.
DROP TRIGGER provisioner_jobs_notify_presets ON provisioner_jobs;
