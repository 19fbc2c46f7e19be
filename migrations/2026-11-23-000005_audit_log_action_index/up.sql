-- Every prebuild cycle counts resource replacements by action, and `audit list --action`
-- filters by it: without this index both read the whole, ever-growing log.
CREATE INDEX audit_log_action_at_idx ON audit_log (action, at);
