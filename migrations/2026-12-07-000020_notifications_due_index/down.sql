DROP INDEX CONCURRENTLY notifications_due_idx;
