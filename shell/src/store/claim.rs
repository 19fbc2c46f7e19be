//! Claiming a prebuild, or building a fresh workspace when none can be claimed
//! (SPEC §3 "Claim", §4 "Claim choice"). The choice comes from the core; this module only
//! loads the candidates and takes the first one it can lock.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Bool, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use poolkeeper_core::prebuilds::{self as core_prebuilds, choose_claim, RunningPrebuild};
use poolkeeper_core::schedule::{next_autostart, CronSchedule};
use uuid::Uuid;

use super::audit::{self, Actor, Change};
use super::workspaces::{allowed_days, insert_build, latest_build, BuildRequest};
use super::StoreError;
use crate::db::enums::{AutomaticUpdates, BuildReason, JobStatus, PrebuildStatus, Transition};
use crate::db::models::{NewWorkspace, Preset, Template, Workspace, WorkspaceBuild};
use crate::db::schema::{presets, templates, workspaces};
use crate::db::{DbPool, PREBUILDS_USER_ID};

/// A validated request for a workspace (the API parsed it).
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub user_id: Uuid,
    pub template_id: Uuid,
    /// Only a preset's pool can be claimed from; without one a fresh workspace is built.
    pub preset_id: Option<Uuid>,
    pub name: String,
    pub autostart_schedule: Option<CronSchedule>,
    /// `None` = the template's default TTL.
    pub ttl_secs: Option<i64>,
    pub parameters: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClaimOutcome {
    pub workspace: Workspace,
    pub build: WorkspaceBuild,
    /// True when a prebuild was handed over, false when a fresh workspace was built.
    pub claimed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("template not found")]
    TemplateNotFound,
    #[error("preset not found in the template's active version")]
    PresetNotFound,
    #[error("{0}")]
    TemplateUnavailable(String),
    #[error("a workspace named {0:?} already exists")]
    NameTaken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ClaimError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::TemplateNotFound => "template_not_found",
            Self::PresetNotFound => "preset_not_found",
            Self::TemplateUnavailable(_) => "template_unavailable",
            Self::NameTaken(_) => "name_taken",
            Self::Store(err) => err.label(),
        }
    }
}

impl From<diesel::result::Error> for ClaimError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Store(StoreError::Query(err))
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for ClaimError {
    fn from(err: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        Self::Store(err.into())
    }
}

/// Hands the user the oldest ready prebuild of the preset, or builds a fresh workspace.
pub async fn claim_or_create(
    pool: &DbPool,
    now: DateTime<Utc>,
    request: &ClaimRequest,
) -> Result<ClaimOutcome, ClaimError> {
    let mut conn = pool.get().await?;
    let template: Template = templates::table
        .find(request.template_id)
        .filter(templates::deleted.eq(false))
        .select(Template::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .ok_or(ClaimError::TemplateNotFound)?;
    let Some(active_version_id) = template.active_version_id else {
        return Err(ClaimError::TemplateUnavailable("the template has no active version".into()));
    };
    if let Some(message) = &template.deprecation_message {
        return Err(ClaimError::TemplateUnavailable(format!(
            "the template is deprecated: {message}"
        )));
    }
    let preset: Option<Preset> = match request.preset_id {
        Some(id) => Some(
            presets::table
                .find(id)
                .filter(presets::template_version_id.eq(active_version_id))
                .select(Preset::as_select())
                .first(&mut conn)
                .await
                .optional()?
                .ok_or(ClaimError::PresetNotFound)?,
        ),
        None => None,
    };
    if name_taken(&mut conn, request.user_id, &request.name).await? {
        return Err(ClaimError::NameTaken(request.name.clone()));
    }
    let ttl_secs = effective_ttl(&template, request.ttl_secs);
    let next_start_at = request
        .autostart_schedule
        .as_ref()
        .and_then(|s| next_autostart(now, s, allowed_days(&template)));
    if let Some(preset) = &preset {
        let rows = running_prebuilds(&mut conn, preset.id).await?;
        let choice = choose_claim(&rows, &core_preset(&template, preset), now);
        for candidate in choice.candidates {
            let claimed = conn
                .transaction::<_, ClaimError, _>(async |conn| {
                    claim_one(conn, candidate, preset.id, request, ttl_secs, next_start_at, now)
                        .await
                })
                .await?;
            if let Some(outcome) = claimed {
                tracing::info!(
                    workspace_id = %outcome.workspace.id,
                    user_id = %request.user_id,
                    preset_id = %preset.id,
                    "prebuild claimed"
                );
                return Ok(outcome);
            }
            tracing::debug!(workspace_id = %candidate, "claim candidate locked or gone, trying the next");
        }
    }
    let outcome = conn
        .transaction::<_, ClaimError, _>(async |conn| {
            create_fresh(conn, &template, active_version_id, request, ttl_secs, next_start_at, now)
                .await
        })
        .await?;
    tracing::info!(workspace_id = %outcome.workspace.id, user_id = %request.user_id, "fresh workspace requested");
    Ok(outcome)
}

/// SPEC §3: the TTL comes from the request, defaulting to the template's; a template that
/// does not let users choose imposes its own.
fn effective_ttl(template: &Template, requested: Option<i64>) -> i64 {
    match requested {
        Some(ttl) if template.user_autostop_enabled => ttl,
        _ => template.default_ttl_secs,
    }
}

/// Locks `candidate` and, if it is still an unclaimed running prebuild of the preset, hands
/// it over. `None` = locked by another claim, or no longer claimable: try the next.
async fn claim_one(
    conn: &mut AsyncPgConnection,
    candidate: Uuid,
    preset_id: Uuid,
    request: &ClaimRequest,
    ttl_secs: i64,
    next_start_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Option<ClaimOutcome>, ClaimError> {
    let locked: Option<Workspace> = workspaces::table
        .find(candidate)
        .filter(workspaces::owner_id.eq(PREBUILDS_USER_ID))
        .filter(workspaces::deleted.eq(false))
        .filter(workspaces::deleting_at.is_null())
        .for_update()
        .skip_locked()
        .select(Workspace::as_select())
        .first(conn)
        .await
        .optional()?;
    let Some(prebuild) = locked else { return Ok(None) };
    // Re-checked under the lock: the reconciler may have queued a delete since the load.
    let (latest, status) = latest_build(conn, candidate).await?;
    let Some(latest) = latest.filter(|b| {
        b.transition == Transition::Start
            && b.preset_id == Some(preset_id)
            && status == Some(JobStatus::Succeeded)
    }) else {
        return Ok(None);
    };
    let workspace: Workspace = diesel::update(workspaces::table.find(prebuild.id))
        .set((
            workspaces::owner_id.eq(request.user_id),
            workspaces::name.eq(&request.name),
            workspaces::autostart_schedule
                .eq(request.autostart_schedule.as_ref().map(|s| s.source().to_owned())),
            workspaces::ttl_secs.eq(ttl_secs),
            workspaces::next_start_at.eq(next_start_at),
            workspaces::last_used_at.eq(now),
            workspaces::dormant_at.eq(None::<DateTime<Utc>>),
            workspaces::deleting_at.eq(None::<DateTime<Utc>>),
            workspaces::updated_at.eq(now),
        ))
        .returning(Workspace::as_returning())
        .get_result(conn)
        .await
        .map_err(|err| name_error(err, &request.name))?;
    let build = insert_build(
        conn,
        &workspace,
        latest.build_number + 1,
        BuildRequest {
            transition: Transition::Start,
            reason: BuildReason::Claim,
            initiator_id: request.user_id,
            template_version_id: latest.template_version_id,
            preset_id: Some(preset_id),
            provisioner_state: latest.provisioner_state,
            parameters: parameters_json(&request.parameters),
        },
        now,
    )
    .await?;
    let change = Change {
        action: "workspace_claim",
        resource_type: "workspace",
        resource_id: Some(workspace.id),
        diff: serde_json::json!({
            "preset_id": preset_id,
            "build_id": build.id,
            "old": { "owner_id": prebuild.owner_id, "name": prebuild.name },
            "new": {
                "owner_id": workspace.owner_id,
                "name": workspace.name,
                "autostart_schedule": workspace.autostart_schedule,
                "ttl_secs": workspace.ttl_secs,
            },
        }),
    };
    let actor = Actor::of_user(conn, request.user_id).await?;
    audit::record(conn, now, &actor, change).await?;
    Ok(Some(ClaimOutcome { workspace, build, claimed: true }))
}

async fn create_fresh(
    conn: &mut AsyncPgConnection,
    template: &Template,
    version_id: Uuid,
    request: &ClaimRequest,
    ttl_secs: i64,
    next_start_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<ClaimOutcome, ClaimError> {
    let workspace: Workspace = diesel::insert_into(workspaces::table)
        .values(NewWorkspace {
            id: Uuid::new_v4(),
            organization_id: template.organization_id,
            owner_id: request.user_id,
            template_id: template.id,
            name: request.name.clone(),
            autostart_schedule: request.autostart_schedule.as_ref().map(|s| s.source().to_owned()),
            ttl_secs,
            next_start_at,
            automatic_updates: AutomaticUpdates::Never,
            last_used_at: Some(now),
            created_at: Some(now),
        })
        .returning(Workspace::as_returning())
        .get_result(conn)
        .await
        .map_err(|err| name_error(err, &request.name))?;
    let build = insert_build(
        conn,
        &workspace,
        1,
        BuildRequest {
            transition: Transition::Start,
            reason: BuildReason::Initiator,
            initiator_id: request.user_id,
            template_version_id: version_id,
            preset_id: request.preset_id,
            provisioner_state: None,
            parameters: parameters_json(&request.parameters),
        },
        now,
    )
    .await?;
    let change = Change {
        action: "workspace_create",
        resource_type: "workspace",
        resource_id: Some(workspace.id),
        diff: serde_json::json!({
            "preset_id": request.preset_id,
            "build_id": build.id,
            "new": {
                "owner_id": workspace.owner_id,
                "name": workspace.name,
                "template_id": workspace.template_id,
                "template_version_id": version_id,
                "autostart_schedule": workspace.autostart_schedule,
                "ttl_secs": workspace.ttl_secs,
            },
        }),
    };
    let actor = Actor::of_user(conn, request.user_id).await?;
    audit::record(conn, now, &actor, change).await?;
    Ok(ClaimOutcome { workspace, build, claimed: false })
}

fn name_error(err: diesel::result::Error, name: &str) -> ClaimError {
    match err {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        ) => ClaimError::NameTaken(name.to_owned()),
        other => other.into(),
    }
}

fn parameters_json(parameters: &BTreeMap<String, String>) -> serde_json::Value {
    serde_json::Value::Object(
        parameters.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect(),
    )
}

async fn name_taken(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    name: &str,
) -> Result<bool, diesel::result::Error> {
    let count: i64 = workspaces::table
        .filter(workspaces::owner_id.eq(owner))
        .filter(workspaces::deleted.eq(false))
        .filter(
            diesel::dsl::sql::<Bool>("lower(name) = lower(")
                .bind::<diesel::sql_types::Text, _>(name)
                .sql(")"),
        )
        .count()
        .get_result(conn)
        .await?;
    Ok(count > 0)
}

#[derive(QueryableByName)]
struct RunningRow {
    #[diesel(sql_type = SqlUuid)]
    workspace_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    template_version_id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Bool)]
    ready: bool,
}

/// The preset's prebuilds whose latest build is a succeeded start, in the core's shape.
/// A workspace is ready when every agent of its latest build is ready.
async fn running_prebuilds(
    conn: &mut AsyncPgConnection,
    preset_id: Uuid,
) -> Result<Vec<RunningPrebuild>, diesel::result::Error> {
    let rows: Vec<RunningRow> = diesel::sql_query(
        // Driven by the preset's own builds (an index range), not by every live prebuild of
        // every preset: a claim must stay fast however large the other pools are.
        "SELECT w.id AS workspace_id, b.template_version_id, w.created_at,
                NOT EXISTS (SELECT 1 FROM workspace_agents a
                            WHERE a.build_id = b.id AND a.lifecycle_state <> 'ready') AS ready
         FROM workspace_builds b
         JOIN workspaces w ON w.id = b.workspace_id
         JOIN provisioner_jobs j ON j.id = b.job_id
         WHERE b.preset_id = $2 AND b.transition = 'start' AND j.status = 'succeeded'
           AND w.owner_id = $1 AND NOT w.deleted AND w.deleting_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM workspace_builds later
                           WHERE later.workspace_id = b.workspace_id
                             AND later.build_number > b.build_number)",
    )
    .bind::<SqlUuid, _>(PREBUILDS_USER_ID)
    .bind::<SqlUuid, _>(preset_id)
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| RunningPrebuild {
            workspace_id: r.workspace_id,
            preset_id,
            template_version_id: r.template_version_id,
            created_at: r.created_at,
            ready: r.ready,
        })
        .collect())
}

/// The preset as the core's claim choice sees it (schedules do not matter to a claim).
fn core_preset(template: &Template, preset: &Preset) -> core_prebuilds::Preset {
    core_prebuilds::Preset {
        id: preset.id,
        name: preset.name.clone(),
        template_id: template.id,
        template_version_id: preset.template_version_id,
        using_active_version: template.active_version_id == Some(preset.template_version_id),
        template_deleted: template.deleted,
        template_deprecated: template.deprecation_message.is_some(),
        desired_instances: preset.desired_instances.map_or(0, |n| u32::try_from(n).unwrap_or(0)),
        expiration_ttl_secs: u64::try_from(preset.expiration_ttl_secs).unwrap_or(0),
        scheduling_timezone: preset.scheduling_timezone.clone(),
        schedules: Vec::new(),
        schedule_lead_secs: u64::try_from(preset.schedule_lead_secs).unwrap_or(0),
        invalidated_at: preset.invalidated_at,
        status: match preset.prebuild_status {
            PrebuildStatus::Healthy => core_prebuilds::PresetStatus::Healthy,
            PrebuildStatus::HardLimited => core_prebuilds::PresetStatus::HardLimited,
            PrebuildStatus::ValidationFailed => core_prebuilds::PresetStatus::ValidationFailed,
        },
    }
}
