//! Job completion, in one transaction: the job's final status, the build's state and agents,
//! the deadlines of a succeeded start build (rules §3, computed by the core), and the deletion
//! of a deleted workspace. Only the provisioner completes jobs; the writes are the store's
//! (`store::completion`).

use chrono::{DateTime, TimeDelta, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use poolkeeper_core::schedule::{
    compute_deadlines, DayName, DeadlineInputs, Deadlines, WeekdaySet,
};
use uuid::Uuid;

use super::backend::{replaced_resources, AgentSpec, BuildFailure, BuildOutput};
use super::ProvisionerError;
use crate::db::enums::{BuildReason, JobStatus, Transition};
use crate::db::models::WorkspaceBuild;
use crate::db::PREBUILDS_USER_ID;
use crate::store::audit::{self, Actor, Change};
use crate::store::completion::{self, DeadlineSources, JobEnd, Lock, LockedJob};
use crate::store::jobs::record_late_result;

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
        let late = record_late_result(conn, job_id, worker_id, &outcome, state, now).await?;
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
        let locked = match completion::lock_job(conn, job_id, &worker_id).await? {
            Lock::Ours(locked) => *locked,
            Lock::NotOurs => return Ok(None),
            Lock::NoBuild => return Err(ProvisionerError::MissingBuild { job_id }),
        };
        let LockedJob { job_status, build, owner_id, template_id } = locked;

        // A job canceled while it ran ends canceled, whatever the backend said.
        let (status, error, state, output) = match (job_status, result) {
            (JobStatus::Canceling, JobResult::Succeeded(out)) => {
                (JobStatus::Canceled, None, out.state.as_deref(), None)
            }
            (JobStatus::Canceling, JobResult::Failed(failure)) => {
                (JobStatus::Canceled, None, failure.state.as_deref(), None)
            }
            (_, JobResult::Succeeded(out)) => {
                (JobStatus::Succeeded, None, out.state.as_deref(), Some(out))
            }
            (_, JobResult::Failed(failure)) => {
                (JobStatus::Failed, Some(failure.error.to_string()), failure.state.as_deref(), None)
            }
            (_, JobResult::Canceled { state }) => {
                (JobStatus::Canceled, None, state.as_deref(), None)
            }
        };
        let agents = output.map(|out| agent_rows(&out.agents)).unwrap_or_default();
        let change = Change {
            action: "build_completed",
            resource_type: "workspace",
            resource_id: Some(build.workspace_id),
            diff: serde_json::json!({
                "build_id": build.id,
                "job_id": job_id,
                "transition": build.transition,
                "worker_id": worker_id,
                "old": { "status": job_status },
                "new": { "status": status },
            }),
        };
        let end = JobEnd {
            job_id,
            build_id: build.id,
            status,
            error: error.clone(),
            state,
            agents: &agents,
            audit: audit::entry(now, &Actor::system("provisioner"), change),
        };
        completion::write_end(conn, end, now).await?;
        let mut completion = Completion {
            status,
            starting_agents: starting_agents(output.map_or(&[], |out| &out.agents), &agents, now),
            deadlines: None,
            replaced_resources: Vec::new(),
        };
        notify_owner(conn, &build, (owner_id, template_id), status, error.as_deref(), now).await?;
        let Some(output) = output else { return Ok(Some(completion)) };

        match build.transition {
            // Prebuilds get no deadline (rules §3): nothing to read for them.
            Transition::Start if owner_id != PREBUILDS_USER_ID => {
                completion.deadlines = set_deadlines(conn, &build, now).await?;
                if build.reason == BuildReason::Claim {
                    let replaced = replaced_resources(
                        build.provisioner_state.as_deref(),
                        output.state.as_deref(),
                    );
                    if !replaced.is_empty() {
                        completion::record_resources_replaced(conn, &build, &replaced, now).await?;
                        tracing::warn!(workspace_id = %build.workspace_id, build_id = %build.id,
                            preset_id = ?build.preset_id, resources = ?replaced,
                            "claim replaced prebuilt resources");
                    }
                    completion.replaced_resources = replaced;
                }
            }
            Transition::Start | Transition::Stop => {}
            Transition::Delete => completion::mark_deleted(conn, build.workspace_id, now).await?,
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
    workspace: (Uuid, Uuid),
    status: JobStatus,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), ProvisionerError> {
    use poolkeeper_core::notifications::build_notice;
    let succeeded = match status {
        JobStatus::Succeeded => true,
        JobStatus::Failed => false,
        // Canceled: someone stopped it on purpose; nothing to tell.
        _ => return Ok(()),
    };
    let Some(notice) = build_notice(build.transition.into(), build.reason.as_str(), succeeded)
    else {
        return Ok(());
    };
    completion::notify_owner(conn, build, workspace, notice, error, now).await?;
    Ok(())
}

/// The build's agents as written: a fresh id each; agents with no start time are ready at
/// once, the others start.
fn agent_rows(agents: &[AgentSpec]) -> Vec<(Uuid, String, bool)> {
    agents.iter().map(|agent| (Uuid::new_v4(), agent.name.clone(), agent.start_secs == 0)).collect()
}

/// The agents left starting, with the instant each is due to become ready (the worker flips
/// them then).
fn starting_agents(
    agents: &[AgentSpec],
    rows: &[(Uuid, String, bool)],
    now: DateTime<Utc>,
) -> Vec<(Uuid, DateTime<Utc>)> {
    agents
        .iter()
        .zip(rows)
        .filter(|(agent, _)| agent.start_secs != 0)
        .map(|(agent, (id, _, _))| {
            let secs = i64::try_from(agent.start_secs).unwrap_or(i64::MAX / 1000);
            let due = now.checked_add_signed(TimeDelta::seconds(secs.min(i64::MAX / 1000)));
            (*id, due.unwrap_or(now))
        })
        .collect()
}

/// rules §3 for a succeeded start build; prebuilds get no deadline. A bad schedule leaves the
/// deadlines empty (logged): the build itself succeeded.
async fn set_deadlines(
    conn: &mut AsyncPgConnection,
    build: &WorkspaceBuild,
    now: DateTime<Utc>,
) -> Result<Option<Deadlines>, ProvisionerError> {
    let Some(DeadlineSources { workspace, template, owner }) =
        completion::deadline_sources(conn, build.workspace_id).await?
    else {
        return Ok(None);
    };
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
    completion::set_deadlines(conn, build.id, workspace.id, &deadlines, now).await?;
    Ok(Some(deadlines))
}

/// The CHECK constraint allows only `mon` .. `sun`, so nothing is dropped in practice.
fn weekdays(days: &[String]) -> WeekdaySet {
    let days: Vec<DayName> = days.iter().filter_map(|day| day.parse().ok()).collect();
    WeekdaySet::from_days(&days)
}
