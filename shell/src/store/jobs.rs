//! The provisioner's job bookkeeping that is not a completion: heartbeats, the reaper's
//! sweeps, failing a job that cannot run, and recording the result of a build that finished
//! after its job was reaped. Every comparison of instants written by different hosts (a
//! worker's heartbeat, the reaper's cutoff) uses the database's `now()`, so clock skew
//! between hosts cannot reap a live job.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{Double, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::audit::{self, Actor, Change};
use super::rows::Prepared;
use crate::db::enums::{FailureKind, JobStatus};
use crate::db::models::ProvisionerJob;
use crate::db::schema::{provisioner_jobs, workspace_builds};

/// Takes the next pending job whose tags `tags` cover (rules §7), if any, for `worker_id`:
/// one statement (its own transaction, one round trip), the row locked with `SKIP LOCKED` so
/// concurrent workers each get a different job (or none) without waiting. Only committed
/// jobs are visible, so a job inserted by an open transaction is never taken. The tag test
/// (`tags <@ worker`) is part of the locking subquery, served by
/// `provisioner_jobs_pending_tags_idx`, so a job a worker may not take is never locked by it.
/// Takes the connection shared, so that reads can be sent behind it without waiting.
pub async fn acquire_next(
    mut conn: &AsyncPgConnection,
    worker_id: &str,
    tags: &poolkeeper_core::tags::Tags,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<ProvisionerJob>, diesel::result::Error> {
    let worker_tags = serde_json::json!(tags);
    Prepared::new(
        diesel::sql_query(ACQUIRE_SQL)
            .bind::<Timestamptz, _>(now)
            .bind::<Text, _>(worker_id)
            .bind::<Jsonb, _>(&worker_tags),
    )
    .get_result(&mut conn)
    .await
    .optional()
}

// $1 = now, $2 = the worker's id, $3 = the worker's tags. The subquery's lock is held until
// the update, in the same statement: no other worker can take the job in between.
//
// The tag test is `jsonb_contained(tags, $3)`, the function behind `tags <@ $3`: for the
// operator with a bound value PostgreSQL guesses that 1% of the queue matches, which made
// the statement's generic plan look costlier than planning it for each worker's tags, so
// every acquisition was planned anew (0.14 ms a plan, on top of 0.24 ms to run it). The
// function gets the planner's default guess instead, the generic plan is kept, and it is
// the same plan: the queue's index in order, the tags checked on each row.
const ACQUIRE_SQL: &str = "
UPDATE provisioner_jobs
   SET status = 'running', started_at = $1, worker_id = $2,
       -- The reaper compares heartbeats with the database's clock: write them by it.
       heartbeat_at = now()
 WHERE id = (SELECT id FROM provisioner_jobs
              WHERE status = 'pending' AND jsonb_contained(tags, $3)
              ORDER BY queue_priority, created_at, id
              LIMIT 1
                FOR UPDATE SKIP LOCKED)
RETURNING *";

/// Record that `worker_id` still works on `job_id`, at the database's time. Returns the
/// job's status, or `None` once the job is no longer this worker's (reaped, or taken over).
pub async fn heartbeat(
    conn: &mut AsyncPgConnection,
    job_id: Uuid,
    worker_id: &str,
) -> Result<Option<JobStatus>, diesel::result::Error> {
    diesel::update(
        provisioner_jobs::table
            .find(job_id)
            .filter(provisioner_jobs::worker_id.eq(worker_id))
            .filter(provisioner_jobs::status.eq_any([JobStatus::Running, JobStatus::Canceling])),
    )
    .set(provisioner_jobs::heartbeat_at.eq(diesel::dsl::now))
    .returning(provisioner_jobs::status)
    .get_result(conn)
    .await
    .optional()
}

/// What one reaper sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reaped {
    pub running: usize,
    pub canceling: usize,
    pub pending: usize,
}

impl Reaped {
    pub fn total(self) -> usize {
        self.running + self.canceling + self.pending
    }
}

// $1 = timeout in seconds, $2 = the error text.
const REAP_RUNNING_SQL: &str = "
UPDATE provisioner_jobs
   SET status = 'failed', completed_at = now(), error = $2, failure_kind = 'reaped'
 WHERE status = 'running' AND heartbeat_at < now() - make_interval(secs => $1)";

// $1 = timeout in seconds. A cancellation nobody started, or whose worker is gone, is done.
const REAP_CANCELING_SQL: &str = "
UPDATE provisioner_jobs
   SET status = 'canceled', completed_at = now(), canceled_at = now(), failure_kind = 'reaped'
 WHERE status = 'canceling'
   AND (heartbeat_at < now() - make_interval(secs => $1) OR started_at IS NULL)";

// $1 = timeout in seconds, $2 = the error text.
const REAP_PENDING_SQL: &str = "
UPDATE provisioner_jobs
   SET status = 'failed', completed_at = now(), error = $2, failure_kind = 'reaped'
 WHERE status = 'pending' AND created_at < now() - make_interval(secs => $1)";

/// Fail running jobs without a heartbeat for `heartbeat_timeout` and pending jobs older than
/// `pending_timeout`, both by the database's clock; end stale cancellations as canceled. All
/// are marked [`FailureKind::Reaped`]: none is a build failure.
pub async fn reap_stale(
    conn: &mut AsyncPgConnection,
    heartbeat_timeout: Duration,
    pending_timeout: Duration,
) -> Result<Reaped, diesel::result::Error> {
    let heartbeat_error = format!(
        "the provisioner stopped sending heartbeats (none for {}s): the worker was lost",
        heartbeat_timeout.as_secs()
    );
    let pending_error = format!(
        "no provisioner acquired the job within {}s: is a provisioner running?",
        pending_timeout.as_secs()
    );
    let running = diesel::sql_query(REAP_RUNNING_SQL)
        .bind::<Double, _>(heartbeat_timeout.as_secs_f64())
        .bind::<Text, _>(heartbeat_error)
        .execute(conn)
        .await?;
    let canceling = diesel::sql_query(REAP_CANCELING_SQL)
        .bind::<Double, _>(heartbeat_timeout.as_secs_f64())
        .execute(conn)
        .await?;
    let pending = diesel::sql_query(REAP_PENDING_SQL)
        .bind::<Double, _>(pending_timeout.as_secs_f64())
        .bind::<Text, _>(pending_error)
        .execute(conn)
        .await?;
    Ok(Reaped { running, canceling, pending })
}

/// Fail a job of `worker_id` that can never run, with an audit entry saying why. Returns
/// whether it was still this worker's to fail.
pub async fn fail_unrunnable(
    conn: &mut AsyncPgConnection,
    job_id: Uuid,
    worker_id: &str,
    error: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool, diesel::result::Error> {
    let (worker_id, error) = (worker_id.to_owned(), error.to_owned());
    conn.transaction(async move |conn| {
        let failed = diesel::update(
            provisioner_jobs::table
                .find(job_id)
                .filter(provisioner_jobs::worker_id.eq(&worker_id))
                .filter(provisioner_jobs::status.eq(JobStatus::Running)),
        )
        .set((
            provisioner_jobs::status.eq(JobStatus::Failed),
            provisioner_jobs::completed_at.eq(diesel::dsl::now),
            provisioner_jobs::error.eq(&error),
            provisioner_jobs::failure_kind.eq(FailureKind::Unrunnable),
        ))
        .execute(conn)
        .await?;
        if failed == 0 {
            return Ok(false);
        }
        let change = Change {
            action: "job_unrunnable",
            resource_type: "provisioner_job",
            resource_id: Some(job_id),
            diff: serde_json::json!({ "job_id": job_id, "worker_id": worker_id, "error": error }),
        };
        audit::record(conn, now, &Actor::system("provisioner"), change).await?;
        Ok(true)
    })
    .await
}

/// What became of the result of a build whose job was already finished by someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateResult {
    /// The state was kept on the build (no newer build of the workspace existed).
    StateSaved,
    /// Noted on the job; no state to save, or a newer build owns the workspace's state.
    Noted,
    /// The job is not this worker's, or was not ended by the reaper: nothing written.
    NotOurs,
}

// $1 = job id, $2 = worker id. Locks the job, and says whether a newer build exists.
const LATE_JOB_SQL: &str = "
SELECT b.id AS build_id, b.workspace_id,
       EXISTS (SELECT 1 FROM workspace_builds n
                WHERE n.workspace_id = b.workspace_id AND n.build_number > b.build_number)
         AS superseded,
       j.error
  FROM provisioner_jobs j JOIN workspace_builds b ON b.job_id = j.id
 WHERE j.id = $1 AND j.worker_id = $2 AND j.failure_kind = 'reaped'
   FOR UPDATE OF j";

#[derive(QueryableByName)]
struct LateJob {
    #[diesel(sql_type = SqlUuid)]
    build_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    workspace_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    superseded: bool,
    #[diesel(sql_type = Nullable<Text>)]
    error: Option<String>,
}

/// The job was reaped while its worker still built: keep the state the backend produced on
/// the build when no newer build exists (it is what exists now; a newer build was given the
/// older state and owns the workspace from then on), and say on the job what happened.
/// `outcome` is how the build ended ("succeeded", "failed: ...", "canceled").
pub async fn record_late_result(
    conn: &mut AsyncPgConnection,
    job_id: Uuid,
    worker_id: &str,
    outcome: &str,
    state: Option<&[u8]>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<LateResult, diesel::result::Error> {
    let (worker_id, outcome) = (worker_id.to_owned(), outcome.to_owned());
    let state = state.map(<[u8]>::to_vec);
    conn.transaction(async move |conn| {
        let job: Option<LateJob> = diesel::sql_query(LATE_JOB_SQL)
            .bind::<SqlUuid, _>(job_id)
            .bind::<Text, _>(&worker_id)
            .get_result(conn)
            .await
            .optional()?;
        let Some(job) = job else { return Ok(LateResult::NotOurs) };
        const NOTE: &str = "the worker finished afterwards";
        if job.error.as_deref().is_some_and(|e| e.contains(NOTE)) {
            // Recorded already (a retried completion, or a spool flushed twice).
            return Ok(LateResult::Noted);
        }
        let save = state.is_some() && !job.superseded;
        if save {
            diesel::update(workspace_builds::table.find(job.build_id))
                .set(workspace_builds::provisioner_state.eq(&state))
                .execute(conn)
                .await?;
        }
        let kept = match (state.is_some(), job.superseded) {
            (false, _) => "it left no state",
            (true, false) => "its state was saved on the build",
            (true, true) => "its state was not saved: a newer build exists",
        };
        let note = format!("{}; {NOTE} ({outcome}): {kept}", job.error.unwrap_or_default());
        diesel::update(provisioner_jobs::table.find(job_id))
            .set(provisioner_jobs::error.eq(note))
            .execute(conn)
            .await?;
        let change = Change {
            action: "build_result_after_reap",
            resource_type: "workspace",
            resource_id: Some(job.workspace_id),
            diff: serde_json::json!({
                "job_id": job_id,
                "build_id": job.build_id,
                "worker_id": worker_id,
                "outcome": outcome,
                "state_saved": save,
            }),
        };
        audit::record(conn, now, &Actor::system("provisioner"), change).await?;
        Ok(if save { LateResult::StateSaved } else { LateResult::Noted })
    })
    .await
}

/// Everything a backend needs to know about a job, read once after acquisition (outside any
/// transaction, so none is held while the backend runs).
#[derive(Debug, Clone)]
pub struct JobContext {
    pub job: ProvisionerJob,
    pub build: crate::db::models::WorkspaceBuild,
    pub workspace: crate::db::models::Workspace,
    pub version: crate::db::models::TemplateVersion,
    pub owner: crate::db::models::User,
    /// The preset's parameters (name, value), sorted by name.
    pub parameters: Vec<(String, String)>,
}

/// The job's context; `None` when the job has no build (the caller reports it). Two reads,
/// pipelined (one round trip): the build with its workspace, version and owner, and the
/// parameters of the build's preset (none when it has no preset).
pub async fn job_context(
    conn: &mut AsyncPgConnection,
    job: ProvisionerJob,
) -> Result<Option<JobContext>, diesel::result::Error> {
    let (found, parameters) = read_context(conn, JobOf::Id(job.id)).await;
    let Some((build, workspace, version, owner)) = found? else { return Ok(None) };
    Ok(Some(JobContext { job, build, workspace, version, owner, parameters: parameters? }))
}

/// Takes the next job (as [`acquire_next`]) and reads its context in the same round trip:
/// the context's reads are sent behind the acquisition without waiting for it, and find the
/// job by what the acquisition wrote (held by `worker_id`, started at `now`), which they see
/// because each statement commits before the next runs. `None` when no job was pending; a
/// context of `None` when the reads found no build of the job taken (it has none, or is not
/// the one they found): the caller reads it with [`job_context`].
pub async fn acquire_next_with_context(
    conn: &AsyncPgConnection,
    worker_id: &str,
    tags: &poolkeeper_core::tags::Tags,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<(ProvisionerJob, Option<JobContext>)>, diesel::result::Error> {
    let acquired = acquire_next(conn, worker_id, tags, now);
    let context = read_context(conn, JobOf::JustTaken { worker_id, started_at: now });
    let (acquired, (found, parameters)) = futures_util::future::join(acquired, context).await;
    let Some(job) = acquired? else { return Ok(None) };
    // The job is taken: a failed read must not lose it (the caller reads it again).
    let found = found.ok().flatten().filter(|(build, ..)| build.job_id == job.id);
    let (Some((build, workspace, version, owner)), Ok(parameters)) = (found, parameters) else {
        return Ok(Some((job, None)));
    };
    let context = JobContext { job, build, workspace, version, owner, parameters };
    Ok(Some((context.job.clone(), Some(context))))
}

/// The job `worker_id` took with an acquisition at `started_at`, if that acquisition
/// committed (and the job is still its own): for a worker that lost the acquisition's reply.
pub async fn taken_at(
    conn: &mut AsyncPgConnection,
    worker_id: &str,
    started_at: chrono::DateTime<chrono::Utc>,
) -> Result<Option<ProvisionerJob>, diesel::result::Error> {
    jobs_taken_at(worker_id, started_at)
        .select(ProvisionerJob::as_select())
        .first(conn)
        .await
        .optional()
}

/// The running or canceling jobs `worker_id` took at `started_at` (one, or none). The
/// statuses are written out rather than bound: only literal values let a plan use the index
/// of active jobs rather than scan the queue.
fn jobs_taken_at(
    worker_id: &str,
    started_at: chrono::DateTime<chrono::Utc>,
) -> provisioner_jobs::BoxedQuery<'_, diesel::pg::Pg> {
    provisioner_jobs::table
        .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(
            "\"provisioner_jobs\".\"status\" IN ('running', 'canceling')",
        ))
        .filter(provisioner_jobs::worker_id.eq(worker_id))
        .filter(provisioner_jobs::started_at.eq(started_at))
        .into_boxed()
}

/// Which job a context is read for.
#[derive(Clone, Copy)]
enum JobOf<'a> {
    Id(Uuid),
    /// The job `worker_id` took at `started_at` (served by the index of active jobs).
    JustTaken {
        worker_id: &'a str,
        started_at: chrono::DateTime<chrono::Utc>,
    },
}

type ContextRows = (
    crate::db::models::WorkspaceBuild,
    crate::db::models::Workspace,
    crate::db::models::TemplateVersion,
    crate::db::models::User,
);

/// The context's two reads, sent together on `conn` (pipelined).
async fn read_context(
    conn: &AsyncPgConnection,
    job: JobOf<'_>,
) -> (QueryResult<Option<ContextRows>>, QueryResult<Vec<(String, String)>>) {
    use crate::db::models::{TemplateVersion, User, Workspace, WorkspaceBuild};
    use crate::db::schema::{preset_parameters, template_versions, users, workspaces};
    let builds_of_job = || {
        let builds = workspace_builds::table.into_boxed();
        match job {
            JobOf::Id(id) => builds.filter(workspace_builds::job_id.eq(id)),
            JobOf::JustTaken { worker_id, started_at } => builds.filter(
                workspace_builds::job_id
                    .eq_any(jobs_taken_at(worker_id, started_at).select(provisioner_jobs::id)),
            ),
        }
    };
    // Boxed (the filter differs by `job`), so wrapped in `Prepared`: Diesel would otherwise
    // prepare and plan these joins on every run, which cost more than running them.
    let (mut first, mut second) = (conn, conn);
    let found = Prepared::new(
        builds_of_job()
            .inner_join(workspaces::table.inner_join(users::table))
            .inner_join(template_versions::table)
            .select((
                WorkspaceBuild::as_select(),
                Workspace::as_select(),
                TemplateVersion::as_select(),
                User::as_select(),
            )),
    )
    .get_result::<ContextRows>(&mut first);
    let parameters = Prepared::new(
        preset_parameters::table
            .filter(
                preset_parameters::preset_id
                    .nullable()
                    .eq_any(builds_of_job().select(workspace_builds::preset_id)),
            )
            .order(preset_parameters::name)
            .select((preset_parameters::name, preset_parameters::value)),
    )
    .load::<(String, String)>(&mut second);
    let (found, parameters) = futures_util::future::join(found, parameters).await;
    (found.optional(), parameters)
}
