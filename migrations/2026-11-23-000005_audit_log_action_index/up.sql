-- Every prebuild cycle counts resource replacements by action, and `audit list --action`
-- filters by it: without this index both read the whole, ever-growing log. Built
-- CONCURRENTLY (outside a transaction, see metadata.toml) so that writers are not blocked.
CREATE INDEX CONCURRENTLY audit_log_action_at_idx ON audit_log (action, at);
