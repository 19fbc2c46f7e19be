-- The hand-overs of a claim batch, in one statement: the one-by-one hand-over
-- (claim_hand_over.sql) over arrays, one element per claim. Each prebuild changes owner and
-- stops being a live prebuild's; its next build, that build's job and one audit entry per
-- workspace are written with it. A prebuild that got a build newer than the one read under
-- the lock is left alone (no row for it).
-- Returns the workspaces handed over, as they now are.
--
--  $1  tstz      now
--  $2  uuid[]    the workspaces (the locked prebuilds)
--  $3  int[]     the build numbers read under the lock
--  $4  uuid[]    the claiming users
--  $5  text[]    the workspaces' new names
--  $6  text[]    autostart schedules (NULL = none)
--  $7  bigint[]  ttl_secs
--  $8  tstz[]    next_start_at (NULL = none)
--  $9  uuid[]    the new jobs' ids
-- $10  jsonb[]   the jobs' inputs
-- $11  bool[]    the job is for a prebuild
-- $12  uuid[]    the new builds' ids
-- $13  uuid[]    template versions
-- $14  uuid[]    presets
-- $15  bytea[]   provisioner state carried over from each prebuild
-- $16  jsonb[]   the audit entries' diffs
-- $17  text      transition ('start')
-- $18  text      build reason ('claim')
WITH claim AS (
    SELECT *
    FROM unnest($2::uuid[], $3::int4[], $4::uuid[], $5::text[], $6::text[], $7::int8[],
                $8::timestamptz[], $9::uuid[], $10::jsonb[], $11::bool[], $12::uuid[],
                $13::uuid[], $14::uuid[], $15::bytea[], $16::jsonb[])
        AS c(workspace_id, build_number, user_id, name, autostart_schedule, ttl_secs,
             next_start_at, job_id, job_input, for_prebuild, build_id, template_version_id,
             preset_id, provisioner_state, diff)
), handed AS (
    UPDATE workspaces w
    SET owner_id = c.user_id, name = c.name, autostart_schedule = c.autostart_schedule,
        ttl_secs = c.ttl_secs, next_start_at = c.next_start_at, last_used_at = $1,
        dormant_at = NULL, deleting_at = NULL, updated_at = $1
    FROM claim c
    WHERE w.id = c.workspace_id
      AND NOT EXISTS (SELECT 1 FROM workspace_builds later
                      WHERE later.workspace_id = c.workspace_id
                        AND later.build_number > c.build_number)
    RETURNING w.*
), unlisted AS (
    UPDATE workspace_builds b SET prebuild_live = false
      FROM handed
     WHERE b.workspace_id = handed.id AND b.prebuild_live
), job AS (
    INSERT INTO provisioner_jobs (id, organization_id, input, for_prebuild, transition,
                                  created_at)
    SELECT c.job_id, h.organization_id, c.job_input, c.for_prebuild, $17, $1
    FROM handed h JOIN claim c ON c.workspace_id = h.id
), build AS (
    INSERT INTO workspace_builds (id, workspace_id, build_number, template_version_id,
                                  preset_id, transition, reason, initiator_id, job_id,
                                  provisioner_state, created_at)
    SELECT c.build_id, h.id, c.build_number + 1, c.template_version_id, c.preset_id, $17, $18,
           c.user_id, c.job_id, c.provisioner_state, $1
    FROM handed h JOIN claim c ON c.workspace_id = h.id
), audited AS (
    INSERT INTO audit_log (at, actor_id, actor, action, resource_type, resource_id, diff)
    SELECT $1, c.user_id, coalesce(u.username, c.user_id::text), 'workspace_claim',
           'workspace', h.id, c.diff
    FROM handed h JOIN claim c ON c.workspace_id = h.id LEFT JOIN users u ON u.id = c.user_id
)
SELECT * FROM handed
