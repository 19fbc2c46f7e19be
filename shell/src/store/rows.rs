//! Write helpers shared by the appliers: a build with its job, an audit entry.

use chrono::{DateTime, Utc};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::db::enums::{BuildReason, Transition};
use crate::db::models::{NewAuditEntry, NewProvisionerJob, NewWorkspaceBuild};
use crate::db::schema::{audit_log, provisioner_jobs, workspace_builds};

/// One build to insert together with its pending job.
pub(crate) struct BuildSpec {
    pub workspace_id: Uuid,
    pub organization_id: Uuid,
    pub build_number: i32,
    pub template_version_id: Uuid,
    pub preset_id: Option<Uuid>,
    pub transition: Transition,
    pub reason: BuildReason,
    pub initiator_id: Uuid,
    pub for_prebuild: bool,
    pub provisioner_state: Option<Vec<u8>>,
}

/// Inserts the jobs then the builds (the build references its job), one statement each
/// whatever the number of builds. Returns the job ids, in input order.
pub(crate) async fn insert_builds(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    specs: Vec<BuildSpec>,
) -> Result<Vec<Uuid>, diesel::result::Error> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let mut jobs = Vec::with_capacity(specs.len());
    let mut builds = Vec::with_capacity(specs.len());
    for spec in specs {
        let job_id = Uuid::new_v4();
        let build_id = Uuid::new_v4();
        jobs.push(NewProvisionerJob {
            id: job_id,
            organization_id: spec.organization_id,
            input: serde_json::json!({
                "workspace_id": spec.workspace_id,
                "build_id": build_id,
                "template_version_id": spec.template_version_id,
            }),
            for_prebuild: spec.for_prebuild,
            transition: spec.transition,
            created_at: Some(now),
        });
        builds.push(NewWorkspaceBuild {
            id: build_id,
            workspace_id: spec.workspace_id,
            build_number: spec.build_number,
            template_version_id: spec.template_version_id,
            preset_id: spec.preset_id,
            transition: spec.transition,
            reason: spec.reason,
            initiator_id: spec.initiator_id,
            job_id,
            deadline: None,
            max_deadline: None,
            provisioner_state: spec.provisioner_state,
            created_at: Some(now),
        });
    }
    let job_ids = jobs.iter().map(|job| job.id).collect();
    diesel::insert_into(provisioner_jobs::table).values(&jobs).execute(conn).await?;
    diesel::insert_into(workspace_builds::table).values(&builds).execute(conn).await?;
    Ok(job_ids)
}

/// An audit entry written by one of the daemon's loops; `actor` names the loop
/// (`lifecycle`, `prebuilds`).
pub(crate) fn audit(
    now: DateTime<Utc>,
    actor: &str,
    action: &str,
    workspace_id: Uuid,
    diff: serde_json::Value,
) -> NewAuditEntry {
    NewAuditEntry {
        at: Some(now),
        actor_id: None,
        actor: actor.to_owned(),
        action: action.to_owned(),
        resource_type: "workspace".to_owned(),
        resource_id: Some(workspace_id),
        diff,
    }
}

pub(crate) async fn insert_audit(
    conn: &mut AsyncPgConnection,
    entries: &[NewAuditEntry],
) -> Result<(), diesel::result::Error> {
    if !entries.is_empty() {
        diesel::insert_into(audit_log::table).values(entries).execute(conn).await?;
    }
    Ok(())
}
