//! The writes of a job's completion (`provisioner::complete`): lock the job, end it (keep the
//! build's state, add the agents: one statement, which needs no transaction when it is all
//! a completion writes), set the deadlines the core computed, mark a deleted workspace, and
//! tell template admins of resources a claim replaced. Nothing here decides: the outcome and
//! the deadlines come in as arguments.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use poolkeeper_core::schedule::Deadlines;
use uuid::Uuid;

use super::audit::{self, Actor, Change};
use super::notifications::{enqueue, template_admins, Dedupe, Kind};
use super::rows::{Prepared, Writes};
use crate::db::enums::{AgentLifecycle, FailureKind, JobStatus};
use crate::db::models::{NewAuditEntry, ProvisionerJob, Template, User, Workspace, WorkspaceBuild};
use crate::db::schema::{provisioner_jobs, templates, users, workspace_builds, workspaces};
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

/// A running job locked for its completion, with what the completion needs to know of its
/// build's workspace.
#[derive(Debug, QueryableByName)]
pub struct LockedJob {
    #[diesel(sql_type = Text)]
    pub job_status: JobStatus,
    #[diesel(embed)]
    pub build: WorkspaceBuild,
    #[diesel(sql_type = SqlUuid)]
    pub owner_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub template_id: Uuid,
}

/// What [`lock_job`] found.
#[derive(Debug)]
pub enum Lock {
    Ours(Box<LockedJob>),
    /// The job is no longer the worker's to complete (reaped, or taken over).
    NotOurs,
    /// The job is the worker's but has no build (the caller reports it).
    NoBuild,
}

// $1 = job id, $2 = worker id. Only the job is locked: the build is the job's own, and
// nothing else writes it.
const LOCK_JOB_SQL: &str = "
SELECT j.status AS job_status, w.owner_id, w.template_id, b.*
  FROM provisioner_jobs j
  JOIN workspace_builds b ON b.job_id = j.id
  JOIN workspaces w ON w.id = b.workspace_id
 WHERE j.id = $1 AND j.worker_id = $2 AND j.status IN ('running', 'canceling')
   FOR UPDATE OF j";

/// Locks the job, if `worker_id` still runs it (running or canceling), and reads its build
/// and workspace with it: one statement. Only when it finds nothing is the job looked at
/// again, to say why.
pub async fn lock_job(
    conn: &mut AsyncPgConnection,
    job_id: Uuid,
    worker_id: &str,
) -> Result<Lock, diesel::result::Error> {
    let locked: Option<LockedJob> = Prepared::new(
        diesel::sql_query(LOCK_JOB_SQL).bind::<SqlUuid, _>(job_id).bind::<Text, _>(worker_id),
    )
    .get_result(conn)
    .await
    .optional()?;
    if let Some(locked) = locked {
        return Ok(Lock::Ours(Box::new(locked)));
    }
    Ok(match lock_running_job(conn, job_id, worker_id).await? {
        None => Lock::NotOurs,
        Some((_, None)) => Lock::NoBuild,
        Some((job, Some(build))) => {
            let (owner_id, template_id) = workspaces::table
                .find(build.workspace_id)
                .select((workspaces::owner_id, workspaces::template_id))
                .get_result(conn)
                .await?;
            Lock::Ours(Box::new(LockedJob { job_status: job.status, build, owner_id, template_id }))
        }
    })
}

/// How a job ended, as the completion writes it.
pub struct JobEnd<'a> {
    pub job_id: Uuid,
    pub build_id: Uuid,
    pub status: JobStatus,
    /// The backend's error, for a failure: a build failure, which rules §4 counts.
    pub error: Option<String>,
    /// The backend's state, kept on the build if it left one.
    pub state: Option<&'a [u8]>,
    /// The build's agents: (id, name, ready); a ready one gets its ready time.
    pub agents: &'a [(Uuid, String, bool)],
    pub audit: NewAuditEntry,
}

/// What the end was decided from: it is written only if the job is still `worker_id`'s, in
/// `status`, and its build's workspace is still `owner_id`'s.
pub struct DecidedFrom<'a> {
    pub worker_id: &'a str,
    pub status: JobStatus,
    pub owner_id: Uuid,
}

/// The end's statement (binds named in the file), with `$agents` (the agents' insert, or
/// nothing) after the file's writes: two fixed texts, each kept prepared.
macro_rules! job_end_sql {
    ($agents:literal) => {
        concat!(include_str!("sql/job_end.sql"), $agents, "SELECT count(*) AS ended FROM ended")
    };
}

const JOB_END_SQL: &str = job_end_sql!("");
const JOB_END_WITH_AGENTS_SQL: &str = job_end_sql!(
    ", agents AS (
    INSERT INTO workspace_agents (id, build_id, name, lifecycle_state, ready_at)
    SELECT a.id, $4, a.name, a.lifecycle_state, a.ready_at
      FROM unnest($18::uuid[], $19::text[], $20::text[], $21::timestamptz[])
           AS a(id, name, lifecycle_state, ready_at)
     WHERE EXISTS (SELECT 1 FROM ended)
)
"
);

#[derive(QueryableByName)]
struct Ended {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    ended: i64,
}

/// Ends the job, keeps the state on the build, adds the agents and the audit entry: one
/// statement, written only while `from` still holds (see [`DecidedFrom`]). Returns whether
/// it was written. Needs no transaction: the statement is one.
pub async fn write_end(
    mut conn: &AsyncPgConnection,
    end: JobEnd<'_>,
    from: DecidedFrom<'_>,
    now: DateTime<Utc>,
) -> Result<bool, diesel::result::Error> {
    use diesel::sql_types::{Array, Binary, Jsonb, Nullable, Timestamptz};
    let canceled_at = (end.status == JobStatus::Canceled).then_some(now);
    let failure_kind = (end.status == JobStatus::Failed).then_some(FailureKind::Build);
    let with_agents = !end.agents.is_empty();
    let sql = if with_agents { JOB_END_WITH_AGENTS_SQL } else { JOB_END_SQL };
    let query = diesel::sql_query(sql)
        .bind::<SqlUuid, _>(end.job_id)
        .bind::<Text, _>(from.worker_id)
        .bind::<Text, _>(from.status)
        .bind::<SqlUuid, _>(end.build_id)
        .bind::<SqlUuid, _>(from.owner_id)
        .bind::<Text, _>(end.status)
        .bind::<Timestamptz, _>(now)
        .bind::<Nullable<Text>, _>(end.error)
        .bind::<Nullable<Timestamptz>, _>(canceled_at)
        .bind::<Nullable<Text>, _>(failure_kind)
        .bind::<Nullable<Binary>, _>(end.state)
        .bind::<Nullable<SqlUuid>, _>(end.audit.actor_id)
        .bind::<Text, _>(end.audit.actor)
        .bind::<Text, _>(end.audit.action)
        .bind::<Text, _>(end.audit.resource_type)
        .bind::<Nullable<SqlUuid>, _>(end.audit.resource_id)
        .bind::<Jsonb, _>(end.audit.diff);
    let ended: Ended = if with_agents {
        let ids: Vec<Uuid> = end.agents.iter().map(|(id, _, _)| *id).collect();
        let names: Vec<&str> = end.agents.iter().map(|(_, name, _)| name.as_str()).collect();
        let (states, ready_at): (Vec<AgentLifecycle>, Vec<Option<DateTime<Utc>>>) = end
            .agents
            .iter()
            .map(|(_, _, ready)| {
                if *ready {
                    (AgentLifecycle::Ready, Some(now))
                } else {
                    (AgentLifecycle::Starting, None)
                }
            })
            .unzip();
        Prepared::new(
            query
                .bind::<Array<SqlUuid>, _>(ids)
                .bind::<Array<Text>, _>(names)
                .bind::<Array<Text>, _>(states)
                .bind::<Array<Nullable<Timestamptz>>, _>(ready_at),
        )
        .get_result(&mut conn)
        .await?
    } else {
        Prepared::new(query).get_result(&mut conn).await?
    };
    Ok(ended.ended > 0)
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

/// A delete build succeeded: the workspace is gone, and a prebuild's start build leaves the
/// index of claimable prebuilds (`prebuild_live`).
pub async fn mark_deleted(
    conn: &mut AsyncPgConnection,
    workspace_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), diesel::result::Error> {
    let mut writes = Writes::new();
    writes.push(
        diesel::update(workspaces::table.find(workspace_id))
            .set((workspaces::deleted.eq(true), workspaces::updated_at.eq(now))),
    );
    writes.push(
        diesel::update(
            workspace_builds::table
                .filter(workspace_builds::workspace_id.eq(workspace_id))
                .filter(workspace_builds::prebuild_live),
        )
        .set(workspace_builds::prebuild_live.eq(false)),
    );
    writes.execute(conn).await
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
/// `(owner_id, template_id)` are the workspace's, read when the job was locked.
pub async fn notify_owner(
    conn: &mut AsyncPgConnection,
    build: &WorkspaceBuild,
    (owner_id, template_id): (Uuid, Uuid),
    notice: poolkeeper_core::notifications::BuildNotice,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), diesel::result::Error> {
    use poolkeeper_core::notifications::BuildNotice;
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
