//! Job completion, in one transaction: the job's final status, the build's state and agents,
//! the deadlines of a succeeded start build (rules §3), and the deletion of a deleted workspace.
//! Only the provisioner writes job completion.

use chrono::{DateTime, TimeDelta, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use poolkeeper_core::schedule::{
    compute_deadlines, DayName, DeadlineInputs, Deadlines, WeekdaySet,
};
use uuid::Uuid;

use super::backend::{replaced_resources, AgentSpec, BuildFailure, BuildOutput};
use super::ProvisionerError;
use crate::db::enums::{AgentLifecycle, BuildReason, FailureKind, JobStatus, Transition};
use crate::db::models::{
    NewWorkspaceAgent, ProvisionerJob, Template, User, Workspace, WorkspaceBuild,
};
use crate::db::schema::{
    provisioner_jobs, templates, users, workspace_agents, workspace_builds, workspaces,
};
use crate::db::PREBUILDS_USER_ID;
use crate::store::audit::{self, Actor, Change};
use crate::store::jobs::record_late_result;
use crate::store::notifications::{enqueue, template_admins, Dedupe, Kind};

/// How a backend run ended.
#[derive(Debug)]
pub enum JobResult {
    Succeeded(BuildOutput),
    Failed(BuildFailure),
    /// Stopped because the job was canceled; the state is whatever the backend left.
    Canceled {
        state: Option<Vec<u8>>,
    },
}

/// What completion wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub status: JobStatus,
    /// Agents left `starting`, with the instant each is due to become ready.
    pub starting_agents: Vec<(Uuid, DateTime<Utc>)>,
    pub deadlines: Option<Deadlines>,
    /// Of a claim build: the prebuild's resources the build re-created.
    pub replaced_resources: Vec<String>,
}

/// Finish `job_id` for `worker_id`. `Ok(None)` if the job is no longer this worker's: when
/// the reaper ended it meanwhile, the build's state is still kept (unless a newer build
/// exists) and the job says what happened (`store::jobs::record_late_result`). Takes the
/// result by reference so that a failed transaction can be retried.
pub async fn complete_job(
    conn: &mut AsyncPgConnection,
    job_id: Uuid,
    worker_id: &str,
    result: &JobResult,
    now: DateTime<Utc>,
) -> Result<Option<Completion>, ProvisionerError> {
    let completion = finish(conn, job_id, worker_id, result, now).await?;
    if completion.is_none() {
        let (outcome, state) = late_outcome(result);
        let late = record_late_result(conn, job_id, worker_id, &outcome, state).await?;
        tracing::warn!(%job_id, worker_id, ?late, outcome,
            "the build finished after its job was ended by the reaper");
    }
    Ok(completion)
}

/// How a build ended, in words for the job's error column, and the state it left.
fn late_outcome(result: &JobResult) -> (String, Option<&[u8]>) {
    match result {
        JobResult::Succeeded(out) => ("succeeded".to_owned(), out.state.as_deref()),
        JobResult::Failed(failure) => {
            (format!("failed: {}", failure.error), failure.state.as_deref())
        }
        JobResult::Canceled { state } => ("stopped".to_owned(), state.as_deref()),
    }
}

/// The completion's transaction; `Ok(None)` (nothing written) if the job is not this
/// worker's to complete.
async fn finish(
    conn: &mut AsyncPgConnection,
    job_id: Uuid,
    worker_id: &str,
    result: &JobResult,
    now: DateTime<Utc>,
) -> Result<Option<Completion>, ProvisionerError> {
    let worker_id = worker_id.to_owned();
    conn.transaction(async move |conn| {
        let job: Option<ProvisionerJob> = provisioner_jobs::table
            .find(job_id)
            .filter(provisioner_jobs::worker_id.eq(&worker_id))
            .filter(provisioner_jobs::status.eq_any([JobStatus::Running, JobStatus::Canceling]))
            .select(ProvisionerJob::as_select())
            .for_update()
            .get_result(conn)
            .await
            .optional()?;
        let Some(job) = job else { return Ok(None) };
        let build: WorkspaceBuild = workspace_builds::table
            .filter(workspace_builds::job_id.eq(job_id))
            .select(WorkspaceBuild::as_select())
            .get_result(conn)
            .await
            .optional()?
            .ok_or(ProvisionerError::MissingBuild { job_id })?;

        // A job canceled while it ran ends canceled, whatever the backend said.
        let (status, error, state, output) = match (job.status, result) {
            (JobStatus::Canceling, JobResult::Succeeded(out)) => {
                (JobStatus::Canceled, None, out.state.clone(), None)
            }
            (JobStatus::Canceling, JobResult::Failed(failure)) => {
                (JobStatus::Canceled, None, failure.state.clone(), None)
            }
            (_, JobResult::Succeeded(out)) => {
                (JobStatus::Succeeded, None, out.state.clone(), Some(out))
            }
            (_, JobResult::Failed(failure)) => {
                (JobStatus::Failed, Some(failure.error.to_string()), failure.state.clone(), None)
            }
            (_, JobResult::Canceled { state }) => (JobStatus::Canceled, None, state.clone(), None),
        };
        diesel::update(provisioner_jobs::table.find(job_id))
            .set((
                provisioner_jobs::status.eq(status),
                provisioner_jobs::completed_at.eq(now),
                provisioner_jobs::error.eq(error.as_deref()),
                provisioner_jobs::canceled_at.eq((status == JobStatus::Canceled).then_some(now)),
                // A failure here is the backend's: a build failure (rules §4 counts these).
                provisioner_jobs::failure_kind
                    .eq((status == JobStatus::Failed).then_some(FailureKind::Build)),
            ))
            .execute(conn)
            .await?;
        if let Some(state) = state {
            diesel::update(workspace_builds::table.find(build.id))
                .set(workspace_builds::provisioner_state.eq(state))
                .execute(conn)
                .await?;
        }
        let mut completion = Completion {
            status,
            starting_agents: Vec::new(),
            deadlines: None,
            replaced_resources: Vec::new(),
        };
        let change = Change {
            action: "build_completed",
            resource_type: "workspace",
            resource_id: Some(build.workspace_id),
            diff: serde_json::json!({
                "build_id": build.id,
                "job_id": job_id,
                "transition": build.transition,
                "worker_id": worker_id,
                "old": { "status": job.status },
                "new": { "status": status },
            }),
        };
        audit::record(conn, now, &Actor::system("provisioner"), change).await?;
        notify_owner(conn, &build, status, error.as_deref(), now).await?;
        let Some(output) = output else { return Ok(Some(completion)) };

        completion.starting_agents = insert_agents(conn, build.id, &output.agents, now).await?;
        match build.transition {
            Transition::Start => {
                completion.deadlines = set_deadlines(conn, &build, now).await?;
                if build.reason == BuildReason::Claim {
                    let replaced = replaced_resources(
                        build.provisioner_state.as_deref(),
                        output.state.as_deref(),
                    );
                    completion.replaced_resources = replaced;
                    notify_replaced(conn, &build, &completion.replaced_resources, now).await?;
                }
            }
            Transition::Delete => {
                diesel::update(workspaces::table.find(build.workspace_id))
                    .set((workspaces::deleted.eq(true), workspaces::updated_at.eq(now)))
                    .execute(conn)
                    .await?;
            }
            Transition::Stop => {}
        }
        Ok(Some(completion))
    })
    .await
}

/// The owner hears of an automatic build that did not do what the schedule promised, and of
/// the auto-delete of their dormant workspace (rules §5 decides which), once per build, in
/// the completion's transaction.
async fn notify_owner(
    conn: &mut AsyncPgConnection,
    build: &WorkspaceBuild,
    status: JobStatus,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), ProvisionerError> {
    use poolkeeper_core::notifications::{build_notice, BuildNotice};
    let transition = match build.transition {
        Transition::Start => poolkeeper_core::build::Transition::Start,
        Transition::Stop => poolkeeper_core::build::Transition::Stop,
        Transition::Delete => poolkeeper_core::build::Transition::Delete,
    };
    let succeeded = match status {
        JobStatus::Succeeded => true,
        JobStatus::Failed => false,
        // Canceled: someone stopped it on purpose; nothing to tell.
        _ => return Ok(()),
    };
    let Some(notice) = build_notice(transition, build.reason.as_str(), succeeded) else {
        return Ok(());
    };
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

/// A claim that re-created some of the prebuild's resources defeats part of the pool's
/// purpose (the user waited for them): template admins hear of it, once per claim build,
/// and the audit log records it, in the completion's transaction. `preset_id` in the
/// payload lets replacements be counted per preset.
async fn notify_replaced(
    conn: &mut AsyncPgConnection,
    build: &WorkspaceBuild,
    replaced: &[String],
    now: DateTime<Utc>,
) -> Result<(), ProvisionerError> {
    if replaced.is_empty() {
        return Ok(());
    }
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
    audit::record(conn, now, &Actor::system("provisioner"), change).await?;
    tracing::warn!(workspace_id = %build.workspace_id, build_id = %build.id,
        preset_id = ?build.preset_id, resources = ?replaced, "claim replaced prebuilt resources");
    Ok(())
}

/// Agents with no start time are ready at once; the others start, and the worker flips them.
async fn insert_agents(
    conn: &mut AsyncPgConnection,
    build_id: Uuid,
    agents: &[AgentSpec],
    now: DateTime<Utc>,
) -> Result<Vec<(Uuid, DateTime<Utc>)>, ProvisionerError> {
    let mut starting = Vec::new();
    for agent in agents {
        let id = Uuid::new_v4();
        let ready = agent.start_secs == 0;
        let lifecycle_state = if ready { AgentLifecycle::Ready } else { AgentLifecycle::Starting };
        diesel::insert_into(workspace_agents::table)
            .values(&NewWorkspaceAgent {
                id,
                build_id,
                name: agent.name.clone(),
                lifecycle_state,
                auth_token_hash: None,
            })
            .execute(conn)
            .await?;
        if ready {
            diesel::update(workspace_agents::table.find(id))
                .set(workspace_agents::ready_at.eq(now))
                .execute(conn)
                .await?;
        } else {
            let secs = i64::try_from(agent.start_secs).unwrap_or(i64::MAX / 1000);
            let due = now.checked_add_signed(TimeDelta::seconds(secs.min(i64::MAX / 1000)));
            starting.push((id, due.unwrap_or(now)));
        }
    }
    Ok(starting)
}

/// rules §3 for a succeeded start build; prebuilds get no deadline. A bad schedule leaves the
/// deadlines empty (logged): the build itself succeeded.
async fn set_deadlines(
    conn: &mut AsyncPgConnection,
    build: &WorkspaceBuild,
    now: DateTime<Utc>,
) -> Result<Option<Deadlines>, ProvisionerError> {
    let workspace: Workspace = workspaces::table
        .find(build.workspace_id)
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
    let inputs = DeadlineInputs {
        completed_at: now,
        is_prebuild: false,
        workspace_ttl_secs: u64::try_from(workspace.ttl_secs).unwrap_or(0),
        autostart_schedule: workspace.autostart_schedule.as_deref(),
        // NULL in the database means the default quiet hours (the core reads "" as that).
        quiet_hours_schedule: Some(owner.quiet_hours_schedule.as_deref().unwrap_or("")),
        user_autostop_enabled: template.user_autostop_enabled,
        default_ttl_secs: u64::try_from(template.default_ttl_secs).unwrap_or(0),
        autostop_requirement_days: weekdays(&template.autostop_requirement_days),
        autostop_requirement_weeks: u32::try_from(template.autostop_requirement_weeks).unwrap_or(1),
        autostart_days: weekdays(&template.autostart_days),
    };
    let deadlines = match compute_deadlines(&inputs) {
        Ok(deadlines) => deadlines,
        Err(err) => {
            tracing::warn!(build_id = %build.id, workspace_id = %workspace.id, error = %err,
                "cannot compute the deadlines; the build keeps none");
            return Ok(None);
        }
    };
    diesel::update(workspace_builds::table.find(build.id))
        .set((
            workspace_builds::deadline.eq(deadlines.deadline),
            workspace_builds::max_deadline.eq(deadlines.max_deadline),
        ))
        .execute(conn)
        .await?;
    diesel::update(workspaces::table.find(workspace.id))
        .set((
            workspaces::next_start_at.eq(deadlines.next_start_at),
            workspaces::updated_at.eq(now),
        ))
        .execute(conn)
        .await?;
    Ok(Some(deadlines))
}

/// The CHECK constraint allows only `mon` .. `sun`, so nothing is dropped in practice.
fn weekdays(days: &[String]) -> WeekdaySet {
    let days: Vec<DayName> = days.iter().filter_map(|day| day.parse().ok()).collect();
    WeekdaySet::from_days(&days)
}
