-- The hand-over of a prebuild to the user who claims it, in one statement: the workspace
-- changes owner and its builds stop being a live prebuild's (`prebuild_live`); its next
-- build, that build's job and the audit entry are written with it.
-- Returns the workspace as it now is, or no row when a build newer than $8 exists.
--
--  $1  uuid     the claiming user
--  $2  text     the workspace's new name
--  $3  text     autostart schedule (NULL = none)
--  $4  bigint   ttl_secs
--  $5  tstz     next_start_at (NULL = none)
--  $6  tstz     now
--  $7  uuid     the workspace (the locked prebuild)
--  $8  int      the build number read under the lock
--  $9  uuid     the new job's id
-- $10  jsonb    the job's input
-- $11  bool     the job is for a prebuild
-- $12  text     transition ('start')
-- $13  uuid     the new build's id
-- $14  uuid     template version
-- $15  uuid     preset
-- $16  text     build reason ('claim')
-- $17  bytea    provisioner state carried over from the prebuild
-- $18  jsonb    the audit entry's diff
WITH handed AS (
    UPDATE workspaces
    SET owner_id = $1, name = $2, autostart_schedule = $3, ttl_secs = $4, next_start_at = $5,
        last_used_at = $6, dormant_at = NULL, deleting_at = NULL, updated_at = $6
    WHERE id = $7
      AND NOT EXISTS (SELECT 1 FROM workspace_builds later
                      WHERE later.workspace_id = $7 AND later.build_number > $8)
    RETURNING *
), unlisted AS (
    UPDATE workspace_builds SET prebuild_live = false
      FROM handed
     WHERE workspace_builds.workspace_id = handed.id AND workspace_builds.prebuild_live
), job AS (
    INSERT INTO provisioner_jobs (id, organization_id, input, for_prebuild, transition,
                                  created_at)
    SELECT $9, organization_id, $10, $11, $12, $6 FROM handed
), build AS (
    INSERT INTO workspace_builds (id, workspace_id, build_number, template_version_id,
                                  preset_id, transition, reason, initiator_id, job_id,
                                  provisioner_state, created_at)
    SELECT $13, id, $8 + 1, $14, $15, $12, $16, $1, $9, $17, $6 FROM handed
), audited AS (
    INSERT INTO audit_log (at, actor_id, actor, action, resource_type, resource_id, diff)
    SELECT $6, $1, coalesce((SELECT username FROM users WHERE users.id = $1), $1::text),
           'workspace_claim', 'workspace', id, $18
    FROM handed
)
SELECT * FROM handed
