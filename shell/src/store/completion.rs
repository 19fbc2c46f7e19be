//! The writes of a job's completion, each a step the provisioner runs inside its one
//! completion transaction (`provisioner::complete`): lock the job, end it, keep the build's
//! state, add the agents, set the deadlines the core computed, mark a deleted workspace, and
//! tell template admins of resources a claim replaced. Nothing here decides: the outcome and
//! the deadlines come in as arguments.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use poolkeeper_core::schedule::Deadlines;
use uuid::Uuid;

use super::audit::{self, Actor, Change};
use super::notifications::{enqueue, template_admins, Dedupe, Kind};
use crate::db::enums::{AgentLifecycle, FailureKind, JobStatus};
use crate::db::models::{
    NewWorkspaceAgent, ProvisionerJob, Template, User, Workspace, WorkspaceBuild,
};
use crate::db::schema::{
    provisioner_jobs, templates, users, workspace_agents, workspace_builds, workspaces,
};
use crate::db::PREBUILDS_USER_ID;

/// The job and its build, the job locked, if `worker_id` still runs it (running or
/// canceling); `None` when it is no longer that worker's to complete. A job without a build
/// is `Some((job, None))`: the caller reports it.
pub async fn lock_running_job(
    conn: &mut AsyncPgConnection,
    job_id: Uuid,
    worker_id: &str,
) -> Result<Option<(ProvisionerJob, Option<WorkspaceBuild>)>, diesel::result::Error> {
    let job: Option<ProvisionerJob> = provisioner_jobs::table
        .find(job_id)
        .filter(provisioner_jobs::worker_id.eq(worker_id))
        .filter(provisioner_jobs::status.eq_any([JobStatus::Running, JobStatus::Canceling]))
        .select(ProvisionerJob::as_select())
        .for_update()
        .get_result(conn)
        .await
        .optional()?;
    let Some(job) = job else { return Ok(None) };
    let build = workspace_builds::table
        .filter(workspace_builds::job_id.eq(job_id))
        .select(WorkspaceBuild::as_select())
        .get_result(conn)
        .await
        .optional()?;
    Ok(Some((job, build)))
}

/// Ends the job with `status` (and the backend's error, for a failure: a build failure,
/// which rules §4 counts), then keeps the backend's state on the build, if it left one.
pub async fn end_job(
    conn: &mut AsyncPgConnection,
    job_id: Uuid,
    build_id: Uuid,
    status: JobStatus,
    error: Option<String>,
    state: Option<&[u8]>,
    now: DateTime<Utc>,
) -> Result<(), diesel::result::Error> {
    diesel::update(provisioner_jobs::table.find(job_id))
        .set((
            provisioner_jobs::status.eq(status),
            provisioner_jobs::completed_at.eq(now),
            provisioner_jobs::error.eq(error),
            provisioner_jobs::canceled_at.eq((status == JobStatus::Canceled).then_some(now)),
            provisioner_jobs::failure_kind
                .eq((status == JobStatus::Failed).then_some(FailureKind::Build)),
        ))
        .execute(conn)
        .await?;
    if let Some(state) = state {
        diesel::update(workspace_builds::table.find(build_id))
            .set(workspace_builds::provisioner_state.eq(state))
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Adds the build's agents: `(name, ready)`, a ready one with its ready time. Returns the
/// ids in the order given.
pub async fn insert_agents(
    conn: &mut AsyncPgConnection,
    build_id: Uuid,
    agents: &[(String, bool)],
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, diesel::result::Error> {
    let mut ids = Vec::with_capacity(agents.len());
    for (name, ready) in agents {
        let id = Uuid::new_v4();
        let lifecycle_state = if *ready { AgentLifecycle::Ready } else { AgentLifecycle::Starting };
        diesel::insert_into(workspace_agents::table)
            .values(&NewWorkspaceAgent {
                id,
                build_id,
                name: name.clone(),
                lifecycle_state,
                auth_token_hash: None,
            })
            .execute(conn)
            .await?;
        if *ready {
            diesel::update(workspace_agents::table.find(id))
                .set(workspace_agents::ready_at.eq(now))
                .execute(conn)
                .await?;
        }
        ids.push(id);
    }
    Ok(ids)
}

/// What the deadlines of a person's start build are computed from (rules §3). `None` for
/// a prebuild, which gets no deadline.
pub struct DeadlineSources {
    pub workspace: Workspace,
    pub template: Template,
    pub owner: User,
}

pub async fn deadline_sources(
    conn: &mut AsyncPgConnection,
    workspace_id: Uuid,
) -> Result<Option<DeadlineSources>, diesel::result::Error> {
    let workspace: Workspace = workspaces::table
        .find(workspace_id)
        .select(Workspace::as_select())
        .get_result(conn)
        .await?;
    if workspace.owner_id == PREBUILDS_USER_ID {
        return Ok(None);
    }
    let template: Template = templates::table
        .find(workspace.template_id)
        .select(Template::as_select())
        .get_result(conn)
        .await?;
    let owner: User =
        users::table.find(workspace.owner_id).select(User::as_select()).get_result(conn).await?;
    Ok(Some(DeadlineSources { workspace, template, owner }))
}

/// Stores the deadlines on the build and the next autostart on the workspace.
pub async fn set_deadlines(
    conn: &mut AsyncPgConnection,
    build_id: Uuid,
    workspace_id: Uuid,
    deadlines: &Deadlines,
    now: DateTime<Utc>,
) -> Result<(), diesel::result::Error> {
    diesel::update(workspace_builds::table.find(build_id))
        .set((
            workspace_builds::deadline.eq(deadlines.deadline),
            workspace_builds::max_deadline.eq(deadlines.max_deadline),
        ))
        .execute(conn)
        .await?;
    diesel::update(workspaces::table.find(workspace_id))
        .set((
            workspaces::next_start_at.eq(deadlines.next_start_at),
            workspaces::updated_at.eq(now),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// A delete build succeeded: the workspace is gone.
pub async fn mark_deleted(
    conn: &mut AsyncPgConnection,
    workspace_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), diesel::result::Error> {
    diesel::update(workspaces::table.find(workspace_id))
        .set((workspaces::deleted.eq(true), workspaces::updated_at.eq(now)))
        .execute(conn)
        .await?;
    Ok(())
}

/// A claim build re-created some of the prebuild's resources: every template admin is told
/// once per claim build, and the audit log records it (once, whoever is told). `preset_id`
/// in the payload lets replacements be counted per preset.
pub async fn record_resources_replaced(
    conn: &mut AsyncPgConnection,
    build: &WorkspaceBuild,
    replaced: &[String],
    now: DateTime<Utc>,
) -> Result<(), diesel::result::Error> {
    let template_id: Uuid = workspaces::table
        .find(build.workspace_id)
        .select(workspaces::template_id)
        .get_result(conn)
        .await?;
    let payload = serde_json::json!({
        "preset_id": build.preset_id,
        "workspace_id": build.workspace_id,
        "build_id": build.id,
        "template_id": template_id,
        "template_version_id": build.template_version_id,
        "claimed_by": build.initiator_id,
        "resources": replaced,
    });
    for admin in template_admins(conn).await? {
        let kind = Kind::PrebuildResourcesReplaced;
        enqueue(conn, now, admin, kind, Dedupe::Once(build.id), payload.clone()).await?;
    }
    let change = Change {
        action: "prebuild_resources_replaced",
        resource_type: "workspace",
        resource_id: Some(build.workspace_id),
        diff: payload,
    };
    audit::record(conn, now, &Actor::system("provisioner"), change).await
}

/// Tells the workspace's owner (never the prebuilds user) of `notice`, once per build.
pub async fn notify_owner(
    conn: &mut AsyncPgConnection,
    build: &WorkspaceBuild,
    notice: poolkeeper_core::notifications::BuildNotice,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), diesel::result::Error> {
    use poolkeeper_core::notifications::BuildNotice;
    let (owner_id, template_id): (Uuid, Uuid) = workspaces::table
        .find(build.workspace_id)
        .select((workspaces::owner_id, workspaces::template_id))
        .get_result(conn)
        .await?;
    if owner_id == PREBUILDS_USER_ID {
        return Ok(());
    }
    let (kind, payload) = match notice {
        BuildNotice::WorkspaceAutodeleted => (
            Kind::WorkspaceAutodeleted,
            serde_json::json!({
                "workspace_id": build.workspace_id,
                "template_id": template_id,
                "build_id": build.id,
            }),
        ),
        BuildNotice::AutobuildFailed => (
            Kind::WorkspaceAutobuildFailed,
            serde_json::json!({
                "workspace_id": build.workspace_id,
                "template_id": template_id,
                "build_id": build.id,
                "transition": build.transition.as_str(),
                "reason": build.reason.as_str(),
                "error": error.unwrap_or("no error recorded"),
            }),
        ),
    };
    enqueue(conn, now, owner_id, kind, Dedupe::Once(build.id), payload).await?;
    Ok(())
}
