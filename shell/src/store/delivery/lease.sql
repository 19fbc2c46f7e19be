-- Leases up to $3 due messages for dispatcher $1 for $2 seconds, and returns them with
-- what rendering and delivery need. `FOR UPDATE SKIP LOCKED`: concurrent dispatchers
-- take disjoint rows. The lease moves `next_attempt_at` to its expiry, so a row whose
-- dispatcher died is due again exactly when the lease runs out (one index serves both).
-- The recipient, names and preference are read after the rows are locked (the joins are
-- on the returned rows, not in the locking SELECT).
WITH due AS (
    SELECT id
    FROM notifications
    WHERE status IN ('pending', 'temporary_failure')
      AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), leased AS (
    UPDATE notifications n
    SET leased_by = $1,
        lease_expires_at = now() + make_interval(secs => $2),
        next_attempt_at = now() + make_interval(secs => $2),
        attempts = n.attempts + 1
    FROM due
    -- Re-checked on the locked row, so a row leased meanwhile is never leased twice.
    WHERE n.id = due.id
      AND n.status IN ('pending', 'temporary_failure')
      AND n.next_attempt_at <= now()
    RETURNING n.id, n.user_id, n.kind, n.payload, n.created_at, n.attempts
)
SELECT l.id,
       l.user_id,
       l.kind,
       l.payload,
       l.created_at,
       l.attempts,
       u.username,
       u.email,
       COALESCE(p.enabled, true) AS enabled,
       w.name AS workspace_name,
       pr.name AS preset_name,
       t.name AS template_name,
       ARRAY(
           SELECT a.method FROM notification_attempts a
           WHERE a.notification_id = l.id AND a.outcome = 'sent'
           ORDER BY a.method
       ) AS sent_methods,
       ARRAY(
           SELECT a.method FROM notification_attempts a
           WHERE a.notification_id = l.id AND a.outcome = 'permanent_failure'
           ORDER BY a.method
       ) AS failed_methods
FROM leased l
JOIN users u ON u.id = l.user_id
LEFT JOIN notification_preferences p ON p.user_id = l.user_id AND p.kind = l.kind
LEFT JOIN workspaces w ON w.id = CASE
    WHEN l.payload->>'workspace_id' ~ '^[0-9a-fA-F-]{36}$' THEN (l.payload->>'workspace_id')::uuid
END
LEFT JOIN presets pr ON pr.id = CASE
    WHEN l.payload->>'preset_id' ~ '^[0-9a-fA-F-]{36}$' THEN (l.payload->>'preset_id')::uuid
END
LEFT JOIN templates t ON t.id = CASE
    WHEN l.payload->>'template_id' ~ '^[0-9a-fA-F-]{36}$' THEN (l.payload->>'template_id')::uuid
    ELSE w.template_id
END
ORDER BY l.created_at, l.id
