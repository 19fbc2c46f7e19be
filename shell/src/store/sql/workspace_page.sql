-- One page of live workspaces with each one's latest build and that build's job status,
-- in (created_at, id) order: a keyset page, stable while rows are added or deleted.
-- $1 owner (uuid, nullable): only this owner's workspaces; NULL = everyone's.
-- $2 after (uuid, nullable): start after this workspace (live or deleted, of the same
--    listing); NULL = from the start.
-- $3 limit (bigint): at most this many rows.
-- The build's provisioner state is not loaded: a listing never shows it, and it can be large.
SELECT w.id, w.organization_id, w.owner_id, w.template_id, w.name, w.autostart_schedule,
       w.ttl_secs, w.next_start_at, w.last_used_at, w.dormant_at, w.deleting_at,
       w.automatic_updates, w.deleted, w.created_at, w.updated_at,
       lb.id AS b_id, lb.build_number AS b_build_number,
       lb.template_version_id AS b_template_version_id, lb.preset_id AS b_preset_id,
       lb.transition AS b_transition, lb.reason AS b_reason, lb.initiator_id AS b_initiator_id,
       lb.job_id AS b_job_id, lb.deadline AS b_deadline, lb.max_deadline AS b_max_deadline,
       lb.created_at AS b_created_at,
       j.status AS job_status
FROM workspaces w
LEFT JOIN LATERAL (SELECT b.* FROM workspace_builds b WHERE b.workspace_id = w.id
                   ORDER BY b.build_number DESC LIMIT 1) lb ON true
LEFT JOIN provisioner_jobs j ON j.id = lb.job_id
WHERE NOT w.deleted
  AND ($1::uuid IS NULL OR w.owner_id = $1)
  AND ($2::uuid IS NULL
       OR (w.created_at, w.id) > (SELECT c.created_at, c.id FROM workspaces c
                                  WHERE c.id = $2 AND ($1::uuid IS NULL OR c.owner_id = $1)))
ORDER BY w.created_at, w.id
LIMIT $3
