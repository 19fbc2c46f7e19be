//! Workspaces as people see them through the API: read, and ask for builds (start, stop,
//! delete), autostart schedule, TTL and activity. Each write re-checks the row under a lock.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use poolkeeper_core::build::Transition as CoreTransition;
use poolkeeper_core::schedule::{
    bumped_deadline, next_autostart, parse_autostart, ActivityInputs, CronSchedule,
};
use uuid::Uuid;

use super::audit::{self, Actor, Change};
use super::rows::{build_rows, BuildSpec, JobInput};
use super::StoreError;
use crate::db::enums::{BuildReason, JobStatus, Transition};
use crate::db::models::{Template, Workspace, WorkspaceBuild};
use crate::db::schema::{provisioner_jobs, templates, workspace_builds, workspaces};
use crate::db::{DbPool, PREBUILDS_USER_ID};

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("workspace not found")]
    NotFound,
    /// The latest build has not finished: a second build would race it.
    #[error("the workspace's latest build is still {0}")]
    BuildInProgress(JobStatus),
    #[error("{0}")]
    NotAllowed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl WorkspaceError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::BuildInProgress(_) => "build_in_progress",
            Self::NotAllowed(_) => "not_allowed",
            Self::Store(err) => err.label(),
        }
    }
}

impl From<diesel::result::Error> for WorkspaceError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Store(StoreError::Query(err))
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for WorkspaceError {
    fn from(err: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        Self::Store(err.into())
    }
}

/// A workspace with its latest build and that build's job status.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceView {
    pub workspace: Workspace,
    pub latest_build: Option<WorkspaceBuild>,
    pub job_status: Option<JobStatus>,
}

/// One live workspace.
pub async fn get(pool: &DbPool, id: Uuid) -> Result<WorkspaceView, WorkspaceError> {
    let mut conn = pool.get().await?;
    let workspace: Workspace = workspaces::table
        .find(id)
        .filter(workspaces::deleted.eq(false))
        .select(Workspace::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .ok_or(WorkspaceError::NotFound)?;
    let (latest_build, job_status) = latest_build(&mut conn, id).await?;
    Ok(WorkspaceView { workspace, latest_build, job_status })
}

pub(crate) async fn latest_build(
    conn: &mut AsyncPgConnection,
    workspace_id: Uuid,
) -> Result<(Option<WorkspaceBuild>, Option<JobStatus>), diesel::result::Error> {
    let row: Option<(WorkspaceBuild, JobStatus)> = workspace_builds::table
        .inner_join(provisioner_jobs::table.on(provisioner_jobs::id.eq(workspace_builds::job_id)))
        .filter(workspace_builds::workspace_id.eq(workspace_id))
        .order(workspace_builds::build_number.desc())
        .select((WorkspaceBuild::as_select(), provisioner_jobs::status))
        .first(conn)
        .await
        .optional()?;
    Ok(match row {
        Some((build, status)) => (Some(build), Some(status)),
        None => (None, None),
    })
}

/// What a new build needs besides the workspace.
#[derive(Debug, Clone)]
pub(crate) struct BuildRequest {
    pub transition: Transition,
    pub reason: BuildReason,
    pub initiator_id: Uuid,
    pub template_version_id: Uuid,
    pub preset_id: Option<Uuid>,
    pub provisioner_state: Option<Vec<u8>>,
    pub parameters: serde_json::Value,
}

/// Inserts the next build of `workspace` and its pending job (visible to provisioners at
/// commit). The caller holds the workspace row lock, so build numbers cannot collide.
pub(crate) async fn insert_build(
    conn: &mut AsyncPgConnection,
    workspace: &Workspace,
    build_number: i32,
    request: BuildRequest,
    now: DateTime<Utc>,
) -> Result<WorkspaceBuild, diesel::result::Error> {
    let spec = BuildSpec {
        workspace_id: workspace.id,
        organization_id: workspace.organization_id,
        build_number,
        template_version_id: request.template_version_id,
        preset_id: request.preset_id,
        transition: request.transition,
        reason: request.reason,
        initiator_id: request.initiator_id,
        for_prebuild: workspace.owner_id == PREBUILDS_USER_ID,
        provisioner_state: request.provisioner_state,
    };
    let (mut job, build) = build_rows(now, spec);
    // A person's build carries the transition and the parameters to the provisioner.
    job.input = JobInput {
        workspace_id: workspace.id,
        build_id: build.id,
        template_version_id: request.template_version_id,
        transition: request.transition,
        parameters: Some(&request.parameters),
    }
    .to_json();
    diesel::insert_into(provisioner_jobs::table).values(job).execute(conn).await?;
    diesel::insert_into(workspace_builds::table)
        .values(build)
        .returning(WorkspaceBuild::as_returning())
        .get_result(conn)
        .await
}

/// Start, stop or delete `id` on behalf of `actor` (the build's initiator). A start uses
/// the template's active version; stop and delete keep the version of the latest build.
pub async fn transition(
    pool: &DbPool,
    id: Uuid,
    transition: Transition,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<WorkspaceBuild, WorkspaceError> {
    let Some(initiator) = actor.id else {
        return Err(WorkspaceError::NotAllowed("a build needs a person as initiator".to_owned()));
    };
    let mut conn = pool.get().await?;
    let build = conn
        .transaction::<_, WorkspaceError, _>(async |conn| {
            let workspace = lock(conn, id).await?;
            let (latest, status) = latest_build(conn, id).await?;
            if let Some(status) = status.filter(|s| !s.is_finished()) {
                return Err(WorkspaceError::BuildInProgress(status));
            }
            let template: Template = templates::table
                .find(workspace.template_id)
                .select(Template::as_select())
                .first(conn)
                .await?;
            let version = match (transition, &latest, template.active_version_id) {
                (Transition::Start, _, Some(active)) => active,
                (_, Some(build), _) => build.template_version_id,
                (_, None, Some(active)) => active,
                (_, None, None) => {
                    return Err(WorkspaceError::NotAllowed(
                        "the template has no active version".to_owned(),
                    ))
                }
            };
            let request = BuildRequest {
                transition,
                reason: BuildReason::Initiator,
                initiator_id: initiator,
                template_version_id: version,
                preset_id: latest.as_ref().and_then(|b| b.preset_id),
                provisioner_state: latest.as_ref().and_then(|b| b.provisioner_state.clone()),
                parameters: serde_json::json!({}),
            };
            let number = latest.as_ref().map_or(1, |b| b.build_number + 1);
            if transition == Transition::Delete {
                diesel::update(workspaces::table.find(id))
                    .set((workspaces::deleting_at.eq(now), workspaces::updated_at.eq(now)))
                    .execute(conn)
                    .await?;
            }
            let build = insert_build(conn, &workspace, number, request, now).await?;
            let change = Change {
                action: match transition {
                    Transition::Start => "workspace_start",
                    Transition::Stop => "workspace_stop",
                    Transition::Delete => "workspace_delete",
                },
                resource_type: "workspace",
                resource_id: Some(id),
                diff: serde_json::json!({
                    "build_id": build.id,
                    "build_number": build.build_number,
                    "transition": transition,
                    "old": { "template_version_id": latest.as_ref().map(|b| b.template_version_id) },
                    "new": { "template_version_id": build.template_version_id },
                }),
            };
            audit::record(conn, now, actor, change).await?;
            Ok(build)
        })
        .await?;
    tracing::info!(workspace_id = %id, build_id = %build.id, transition = %transition, "build requested");
    Ok(build)
}

/// Sets (or clears) the autostart schedule; `next_start_at` follows it (rules §1).
pub async fn set_autostart(
    pool: &DbPool,
    id: Uuid,
    schedule: Option<&CronSchedule>,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Workspace, WorkspaceError> {
    let mut conn = pool.get().await?;
    let workspace = conn
        .transaction::<_, WorkspaceError, _>(async |conn| {
            let workspace = lock(conn, id).await?;
            let template = template_of(conn, &workspace).await?;
            if schedule.is_some() && !template.user_autostart_enabled {
                return Err(WorkspaceError::NotAllowed(
                    "the template does not allow user autostart schedules".to_owned(),
                ));
            }
            let next = schedule.and_then(|s| next_autostart(now, s, allowed_days(&template)));
            let updated: Workspace = diesel::update(workspaces::table.find(id))
                .set((
                    workspaces::autostart_schedule.eq(schedule.map(|s| s.source().to_owned())),
                    workspaces::next_start_at.eq(next),
                    workspaces::updated_at.eq(now),
                ))
                .returning(Workspace::as_returning())
                .get_result(conn)
                .await?;
            let diff = serde_json::json!({
                "old": {
                    "autostart_schedule": workspace.autostart_schedule,
                    "next_start_at": workspace.next_start_at,
                },
                "new": {
                    "autostart_schedule": updated.autostart_schedule,
                    "next_start_at": updated.next_start_at,
                },
            });
            let change = Change {
                action: "workspace_autostart",
                resource_type: "workspace",
                resource_id: Some(id),
                diff,
            };
            audit::record(conn, now, actor, change).await?;
            Ok(updated)
        })
        .await?;
    Ok(workspace)
}

/// Sets the TTL (0 = none); refused when the template does not let users choose it.
pub async fn set_ttl(
    pool: &DbPool,
    id: Uuid,
    ttl_secs: i64,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Workspace, WorkspaceError> {
    let mut conn = pool.get().await?;
    let workspace = conn
        .transaction::<_, WorkspaceError, _>(async |conn| {
            let workspace = lock(conn, id).await?;
            let template = template_of(conn, &workspace).await?;
            if !template.user_autostop_enabled {
                return Err(WorkspaceError::NotAllowed(
                    "the template does not allow users to set a TTL".to_owned(),
                ));
            }
            let updated: Workspace = diesel::update(workspaces::table.find(id))
                .set((workspaces::ttl_secs.eq(ttl_secs), workspaces::updated_at.eq(now)))
                .returning(Workspace::as_returning())
                .get_result(conn)
                .await?;
            let change = Change {
                action: "workspace_ttl",
                resource_type: "workspace",
                resource_id: Some(id),
                diff: serde_json::json!({
                    "old": { "ttl_secs": workspace.ttl_secs },
                    "new": { "ttl_secs": updated.ttl_secs },
                }),
            };
            audit::record(conn, now, actor, change).await?;
            Ok(updated)
        })
        .await?;
    Ok(workspace)
}

/// Records activity at `at` (rules §3 "Activity"): `last_used_at` never moves backwards,
/// and the latest build's deadline is bumped as the core's `bumped_deadline` says. Only a
/// moved deadline or a woken dormant workspace is audited: `last_used_at` alone changes on
/// every report and would drown the log.
pub async fn record_activity(
    pool: &DbPool,
    id: Uuid,
    actor: &Actor,
    at: DateTime<Utc>,
) -> Result<Workspace, WorkspaceError> {
    let mut conn = pool.get().await?;
    let workspace = conn
        .transaction::<_, WorkspaceError, _>(async |conn| {
            let workspace = lock(conn, id).await?;
            let template = template_of(conn, &workspace).await?;
            let (latest, status) = latest_build(conn, id).await?;
            let mut deadline_change = None;
            if let Some(build) = latest {
                let inputs = activity_inputs(&workspace, &template, &build, status, at);
                let bumped = bumped_deadline(&inputs);
                if bumped != build.deadline {
                    diesel::update(workspace_builds::table.find(build.id))
                        .set(workspace_builds::deadline.eq(bumped))
                        .execute(conn)
                        .await?;
                    deadline_change = Some((build.deadline, bumped));
                }
            }
            let last_used_at = workspace.last_used_at.max(at);
            let updated: Workspace = diesel::update(workspaces::table.find(id))
                .set((
                    workspaces::last_used_at.eq(last_used_at),
                    workspaces::dormant_at.eq(None::<DateTime<Utc>>),
                ))
                .returning(Workspace::as_returning())
                .get_result(conn)
                .await?;
            if deadline_change.is_some() || workspace.dormant_at.is_some() {
                let (old_deadline, new_deadline) = deadline_change.unzip();
                let change = Change {
                    action: "workspace_activity",
                    resource_type: "workspace",
                    resource_id: Some(id),
                    diff: serde_json::json!({
                        "old": { "deadline": old_deadline.flatten(), "dormant_at": workspace.dormant_at },
                        "new": { "deadline": new_deadline.flatten(), "dormant_at": updated.dormant_at },
                    }),
                };
                audit::record(conn, at, actor, change).await?;
            }
            Ok(updated)
        })
        .await?;
    Ok(workspace)
}

/// The core's view of one activity report (negative columns, which CHECKs forbid, read as 0).
fn activity_inputs(
    workspace: &Workspace,
    template: &Template,
    build: &WorkspaceBuild,
    status: Option<JobStatus>,
    at: DateTime<Utc>,
) -> ActivityInputs {
    let secs = |value: i64| u64::try_from(value).unwrap_or(0);
    let next = workspace
        .autostart_schedule
        .as_deref()
        .and_then(|text| parse_autostart(text).ok())
        .and_then(|schedule| next_autostart(at, &schedule, allowed_days(template)));
    ActivityInputs {
        at,
        is_prebuild: workspace.owner_id == PREBUILDS_USER_ID,
        transition: CoreTransition::from(build.transition),
        job_completed: status == Some(JobStatus::Succeeded),
        deadline: build.deadline,
        max_deadline: build.max_deadline,
        workspace_ttl_secs: secs(workspace.ttl_secs),
        next_autostart: next,
        default_ttl_secs: secs(template.default_ttl_secs),
        user_autostop_enabled: template.user_autostop_enabled,
        activity_bump_secs: secs(template.activity_bump_secs),
    }
}

async fn lock(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Workspace, WorkspaceError> {
    workspaces::table
        .find(id)
        .filter(workspaces::deleted.eq(false))
        .for_update()
        .select(Workspace::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or(WorkspaceError::NotFound)
}

async fn template_of(
    conn: &mut AsyncPgConnection,
    workspace: &Workspace,
) -> Result<Template, diesel::result::Error> {
    templates::table.find(workspace.template_id).select(Template::as_select()).first(conn).await
}

/// The template's allowed autostart days (unknown names, which the CHECK forbids, are skipped).
pub(crate) fn allowed_days(template: &Template) -> poolkeeper_core::schedule::WeekdaySet {
    let days: Vec<poolkeeper_core::schedule::DayName> =
        template.autostart_days.iter().filter_map(|d| d.parse().ok()).collect();
    poolkeeper_core::schedule::WeekdaySet::from_days(&days)
}
