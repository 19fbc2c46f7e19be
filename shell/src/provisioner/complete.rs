//! Job completion: the job's final status, the build's state and agents, the deadlines of a
//! succeeded start build (rules §3, computed by the core), the owner's notice, and the
//! deletion of a deleted workspace. Only the provisioner completes jobs; the writes are the
//! store's (`store::completion`).
//!
//! Most ends are only the job's own rows (a prebuild's build, a stop, any failure): the worker
//! decides them from what it read when it took the job and writes them in one statement,
//! which writes nothing unless the job and its workspace are still as read. Any other end,
//! or one whose job was canceled or handed over meanwhile, is decided again in a transaction
//! that locks the job first.

use chrono::{DateTime, TimeDelta, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use poolkeeper_core::notifications::BuildNotice;
use poolkeeper_core::schedule::{
    compute_deadlines, DayName, DeadlineInputs, Deadlines, WeekdaySet,
};
use uuid::Uuid;

use super::acquire::acquire_next_job_with_context;
use super::backend::{replaced_resources, AgentSpec, BuildFailure, BuildOutput};
use super::context::JobContext;
use super::ProvisionerError;
use crate::db::enums::{BuildReason, JobStatus, Transition};
use crate::db::models::{ProvisionerJob, WorkspaceBuild};
use crate::db::PREBUILDS_USER_ID;
use crate::store::audit::{self, Actor, Change};
use crate::store::completion::{self, DeadlineSources, DecidedFrom, JobEnd, Lock, LockedJob};
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

/// What the worker read of its job when it took it (its context).
#[derive(Debug, Clone, Copy)]
pub struct AsTaken<'a> {
    pub build: &'a WorkspaceBuild,
    /// The owner of the build's workspace.
    pub owner_id: Uuid,
}

/// Finish the job the worker took, read as `taken`: in one statement when its end writes
/// only the job's own rows and the job is still running and its workspace still has that
/// owner; otherwise (that statement wrote nothing) as [`complete_job`] does.
pub async fn complete_taken_job(
    conn: &mut AsyncPgConnection,
    taken: AsTaken<'_>,
    worker_id: &str,
    result: &JobResult,
    now: DateTime<Utc>,
) -> Result<Option<Completion>, ProvisionerError> {
    end_taken_job(conn, taken, worker_id, result, now, None).await.0
}

/// The next job a worker takes as it ends one (see [`end_taken_job`]).
#[derive(Debug, Clone, Copy)]
pub struct NextJob<'a> {
    /// The worker's tags (rules §7).
    pub tags: &'a poolkeeper_core::tags::Tags,
    /// The acquisition's instant: the job's `started_at`, by which a lost reply is found.
    pub now: DateTime<Utc>,
}

/// What taking the next job gave: the job and, when read with it, its context.
pub type Acquired = Result<Option<(ProvisionerJob, Option<JobContext>)>, ProvisionerError>;

/// [`complete_taken_job`], and with `next` the acquisition of the worker's next job sent in
/// the same round trip as the end, when the end is one statement (pipelined: each statement
/// still commits on its own, the end first). The acquisition's result comes back whatever the
/// end's (a job it took must not be lost); `None` when it was not sent.
pub async fn end_taken_job(
    conn: &mut AsyncPgConnection,
    taken: AsTaken<'_>,
    worker_id: &str,
    result: &JobResult,
    now: DateTime<Utc>,
    next: Option<NextJob<'_>>,
) -> (Result<Option<Completion>, ProvisionerError>, Option<Acquired>) {
    let outcome = Outcome::of(JobStatus::Running, result);
    if !Tails::of(taken.build, taken.owner_id, &outcome).is_empty() {
        return (complete_job(conn, taken.build.job_id, worker_id, result, now).await, None);
    }
    let agents = outcome.agent_rows();
    let end = outcome.end(taken.build, worker_id, JobStatus::Running, &agents, now);
    let from = DecidedFrom { worker_id, status: JobStatus::Running, owner_id: taken.owner_id };
    let (written, acquired) = {
        let shared: &AsyncPgConnection = conn;
        let written = completion::write_end(shared, end, from, now);
        match next {
            Some(next) => {
                let acquired =
                    acquire_next_job_with_context(shared, worker_id, next.tags, next.now);
                let (written, acquired) = futures_util::future::join(written, acquired).await;
                (written, Some(acquired))
            }
            None => (written.await, None),
        }
    };
    let completed = match written {
        Ok(true) => Ok(Some(outcome.completion(&agents, now))),
        // The job was canceled or handed over meanwhile: decided again, under its lock.
        Ok(false) => complete_job(conn, taken.build.job_id, worker_id, result, now).await,
        Err(err) => Err(err.into()),
    };
    (completed, acquired)
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

/// How the job ends, decided from its status and the backend's result.
struct Outcome<'r> {
    status: JobStatus,
    error: Option<String>,
    state: Option<&'r [u8]>,
    /// What a succeeded build produced (none for any other end).
    output: Option<&'r BuildOutput>,
}

impl<'r> Outcome<'r> {
    /// A job canceled while it ran ends canceled, whatever the backend said.
    fn of(job_status: JobStatus, result: &'r JobResult) -> Self {
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
        Self { status, error, state, output }
    }

    fn agent_rows(&self) -> Vec<(Uuid, String, bool)> {
        self.output.map(|out| agent_rows(&out.agents)).unwrap_or_default()
    }

    /// The job's own rows: its end, the build's state and agents, the audit entry.
    fn end<'a>(
        &'a self,
        build: &WorkspaceBuild,
        worker_id: &str,
        job_status: JobStatus,
        agents: &'a [(Uuid, String, bool)],
        now: DateTime<Utc>,
    ) -> JobEnd<'a> {
        let change = Change {
            action: "build_completed",
            resource_type: "workspace",
            resource_id: Some(build.workspace_id),
            diff: serde_json::json!({
                "build_id": build.id,
                "job_id": build.job_id,
                "transition": build.transition,
                "worker_id": worker_id,
                "old": { "status": job_status },
                "new": { "status": self.status },
            }),
        };
        JobEnd {
            job_id: build.job_id,
            build_id: build.id,
            status: self.status,
            error: self.error.clone(),
            state: self.state,
            agents,
            audit: audit::entry(now, &Actor::system("provisioner"), change),
        }
    }

    fn completion(&self, agents: &[(Uuid, String, bool)], now: DateTime<Utc>) -> Completion {
        Completion {
            status: self.status,
            starting_agents: starting_agents(
                self.output.map_or(&[], |out| &out.agents),
                agents,
                now,
            ),
            deadlines: None,
            replaced_resources: Vec::new(),
        }
    }
}

/// What a completion writes beyond the job's own rows.
struct Tails {
    /// rules §5: the owner hears of an automatic build that did not do what the schedule
    /// promised, and of the auto-delete of their dormant workspace.
    notice: Option<BuildNotice>,
    /// A person's succeeded start build: its deadlines (rules §3; prebuilds get none), and
    /// for a claim the prebuilt resources it replaced.
    person_started: bool,
    /// A succeeded delete build: the workspace is gone.
    deleted: bool,
}

impl Tails {
    fn of(build: &WorkspaceBuild, owner_id: Uuid, outcome: &Outcome<'_>) -> Self {
        use poolkeeper_core::notifications::build_notice;
        let succeeded = match outcome.status {
            JobStatus::Succeeded => Some(true),
            JobStatus::Failed => Some(false),
            // Canceled: someone stopped it on purpose; nothing to tell.
            _ => None,
        };
        let notice = succeeded.and_then(|succeeded| {
            build_notice(build.transition.into(), build.reason.as_str(), succeeded)
        });
        let succeeded = outcome.output.is_some();
        Self {
            notice,
            person_started: succeeded
                && build.transition == Transition::Start
                && owner_id != PREBUILDS_USER_ID,
            deleted: succeeded && build.transition == Transition::Delete,
        }
    }

    fn is_empty(&self) -> bool {
        self.notice.is_none() && !self.person_started && !self.deleted
    }
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
        let outcome = Outcome::of(job_status, result);
        let tails = Tails::of(&build, owner_id, &outcome);
        let agents = outcome.agent_rows();
        let end = outcome.end(&build, &worker_id, job_status, &agents, now);
        let from = DecidedFrom { worker_id: &worker_id, status: job_status, owner_id };
        if !completion::write_end(conn, end, from, now).await? {
            // The job is locked, so its workspace changed hands since the lock's read: the
            // transaction is retried, and decides again.
            return Err(ProvisionerError::CompletionRaced { job_id });
        }
        let mut completion = outcome.completion(&agents, now);
        if let Some(notice) = tails.notice {
            completion::notify_owner(
                conn,
                &build,
                (owner_id, template_id),
                notice,
                outcome.error.as_deref(),
                now,
            )
            .await?;
        }
        if tails.person_started {
            completion.deadlines = set_deadlines(conn, &build, now).await?;
            if build.reason == BuildReason::Claim {
                let replaced =
                    replaced_resources(build.provisioner_state.as_deref(), outcome.state);
                if !replaced.is_empty() {
                    completion::record_resources_replaced(conn, &build, &replaced, now).await?;
                    tracing::warn!(workspace_id = %build.workspace_id, build_id = %build.id,
                        preset_id = ?build.preset_id, resources = ?replaced,
                        "claim replaced prebuilt resources");
                }
                completion.replaced_resources = replaced;
            }
        }
        if tails.deleted {
            completion::mark_deleted(conn, build.workspace_id, now).await?;
        }
        Ok(Some(completion))
    })
    .await
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
