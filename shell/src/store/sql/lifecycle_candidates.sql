-- Lifecycle candidates: every live workspace of a person (prebuilds get no decision), with
-- its owner's status, its template's settings, and its latest build and that build's job.
--
-- $1  uuid  the prebuilds system user (left out)
SELECT w.id, w.owner_id, w.organization_id, u.status AS owner_status, w.autostart_schedule,
       w.next_start_at, w.last_used_at, w.dormant_at, w.deleting_at, w.automatic_updates,
       lb.build_number, lb.provisioner_state, lb.transition, lb.template_version_id,
       lb.created_at AS build_created_at, lb.deadline, lb.max_deadline,
       lb.job_status, lb.job_completed_at,
       t.active_version_id, t.require_active_version, t.user_autostart_enabled,
       t.user_autostop_enabled, t.autostart_days, t.failure_ttl_secs, t.time_til_dormant_secs,
       t.time_til_dormant_autodelete_secs
FROM workspaces w
JOIN users u ON u.id = w.owner_id
JOIN templates t ON t.id = w.template_id
-- The job is joined inside the lateral: one probe per workspace, where a join outside it was
-- planned as a Memoize that never hit (every build has its own job) and cost 15-35% more.
JOIN LATERAL (SELECT b.*, j.status AS job_status, j.completed_at AS job_completed_at
              FROM workspace_builds b JOIN provisioner_jobs j ON j.id = b.job_id
              WHERE b.workspace_id = w.id
              ORDER BY b.build_number DESC LIMIT 1) lb ON true
WHERE NOT w.deleted AND w.owner_id <> $1
