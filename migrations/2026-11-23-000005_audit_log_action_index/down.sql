DROP INDEX audit_log_action_at_idx;
