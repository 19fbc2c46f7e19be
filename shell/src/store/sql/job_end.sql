-- The end of a job, in one statement: its final status, the state the backend left on its
-- build, the build's agents (the variant with agents) and the audit entry. Nothing is
-- written unless the job is still the worker's, in the status the caller decided from, and
-- its build's workspace still has the owner the caller decided for. Returns the number of
-- jobs ended: 1, or 0 when nothing was written.
--
--  $1  uuid     the job
--  $2  text     the worker
--  $3  text     the status the end was decided from ('running' or 'canceling')
--  $4  uuid     the job's build
--  $5  uuid     the owner the end was decided for
--  $6  text     the final status
--  $7  tstz     now: completed_at, and the audit entry's instant
--  $8  text     error (NULL = none)
--  $9  tstz     canceled_at (NULL = not canceled)
-- $10  text     failure kind (NULL = not failed)
-- $11  bytea    the backend's state (NULL = the build keeps its own)
-- $12  uuid     audit: actor id (NULL = a loop)
-- $13  text     audit: actor
-- $14  text     audit: action
-- $15  text     audit: resource type
-- $16  uuid     audit: resource id
-- $17  jsonb    audit: diff
-- with agents:
-- $18  uuid[]   agent ids
-- $19  text[]   agent names
-- $20  text[]   agent lifecycle states
-- $21  tstz[]   agent ready instants (NULL = not ready)
WITH ended AS (
    UPDATE provisioner_jobs j
       SET status = $6, completed_at = $7, error = $8, canceled_at = $9, failure_kind = $10
      FROM workspace_builds b
      JOIN workspaces w ON w.id = b.workspace_id
     WHERE j.id = $1 AND j.worker_id = $2 AND j.status = $3
       AND b.id = $4 AND b.job_id = j.id AND w.owner_id = $5
    RETURNING j.id
), kept AS (
    UPDATE workspace_builds SET provisioner_state = $11
     WHERE id = $4 AND $11 IS NOT NULL AND EXISTS (SELECT 1 FROM ended)
), audited AS (
    INSERT INTO audit_log (at, actor_id, actor, action, resource_type, resource_id, diff)
    SELECT $7, $12, $13, $14, $15, $16, $17 WHERE EXISTS (SELECT 1 FROM ended)
)
