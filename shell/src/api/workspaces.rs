//! `/api/v1/workspaces`: create (claim a prebuild or build fresh), read, start, stop,
//! delete, autostart schedule, TTL, activity.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use poolkeeper_core::schedule::{parse_autostart, CronSchedule};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::{Caller, WorkspaceAction};
use super::body::{nul_free, JsonBody};
use super::error::{ApiError, ErrorBody};
use super::path::PathParams;
use super::ApiState;
use crate::db::enums::{BuildReason, JobStatus, Transition};
use crate::db::models::{Workspace, WorkspaceBuild};
use crate::db::PREBUILDS_USER_ID;
use crate::store::claim::ClaimRequest;
use crate::store::templates::TemplateName;
use crate::store::workspace_page::{list_page, PageError, PageRequest};
use crate::store::workspaces::{self as store, WorkspaceView};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// Template name (in `organization`, default "default").
    pub template: String,
    #[serde(default)]
    pub organization: Option<String>,
    /// Preset name in the template's active version; a claim needs one.
    #[serde(default)]
    pub preset: Option<String>,
    pub name: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    #[serde(default)]
    pub autostart_schedule: Option<String>,
    #[serde(default)]
    pub ttl_secs: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WorkspaceCreated {
    pub workspace: WorkspaceJson,
    pub claimed: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WorkspaceJson {
    pub id: Uuid,
    pub name: String,
    pub organization_id: Uuid,
    pub owner_id: Uuid,
    pub template_id: Uuid,
    /// Owned by the prebuild pool (not yet claimed).
    pub prebuilt: bool,
    pub autostart_schedule: Option<String>,
    pub ttl_secs: i64,
    pub next_start_at: Option<DateTime<Utc>>,
    pub last_used_at: DateTime<Utc>,
    pub dormant_at: Option<DateTime<Utc>>,
    pub deleting_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub latest_build: Option<BuildJson>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BuildJson {
    pub id: Uuid,
    pub build_number: i32,
    pub transition: Transition,
    pub reason: BuildReason,
    pub status: Option<JobStatus>,
    pub template_version_id: Uuid,
    pub preset_id: Option<Uuid>,
    pub initiator_id: Uuid,
    pub deadline: Option<DateTime<Utc>>,
    pub max_deadline: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl WorkspaceJson {
    fn new(w: Workspace, build: Option<WorkspaceBuild>, status: Option<JobStatus>) -> Self {
        Self {
            id: w.id,
            prebuilt: w.owner_id == PREBUILDS_USER_ID,
            name: w.name,
            organization_id: w.organization_id,
            owner_id: w.owner_id,
            template_id: w.template_id,
            autostart_schedule: w.autostart_schedule,
            ttl_secs: w.ttl_secs,
            next_start_at: w.next_start_at,
            last_used_at: w.last_used_at,
            dormant_at: w.dormant_at,
            deleting_at: w.deleting_at,
            created_at: w.created_at,
            latest_build: build.map(|b| BuildJson {
                id: b.id,
                build_number: b.build_number,
                transition: b.transition,
                reason: b.reason,
                status,
                template_version_id: b.template_version_id,
                preset_id: b.preset_id,
                initiator_id: b.initiator_id,
                deadline: b.deadline,
                max_deadline: b.max_deadline,
                created_at: b.created_at,
            }),
        }
    }

    pub fn from_view(view: WorkspaceView) -> Self {
        Self::new(view.workspace, view.latest_build, view.job_status)
    }
}

/// Workspace names: what a hostname and a CLI argument can carry.
fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request("name", "1 to 64 characters: letters, digits, '-' and '_'"))
    }
}

/// Longest TTL a person may choose (Coder's limit too): deadlines stay far from the edge of
/// the time range, so no later addition can overflow.
const MAX_TTL_SECS: i64 = 30 * 24 * 3600;

fn validate_ttl(field: &str, ttl: i64) -> Result<i64, ApiError> {
    if ttl < 0 {
        return Err(ApiError::bad_request(field, "must not be negative"));
    }
    if ttl > MAX_TTL_SECS {
        return Err(ApiError::bad_request(field, "must be at most 30 days (2592000 seconds)"));
    }
    Ok(ttl)
}

fn validate_autostart(text: Option<&str>) -> Result<Option<CronSchedule>, ApiError> {
    text.filter(|t| !t.trim().is_empty())
        .map(|t| {
            parse_autostart(t)
                .map_err(|err| ApiError::bad_request("autostart_schedule", err.to_string()))
        })
        .transpose()
}

fn parse_id(text: &str) -> Result<Uuid, ApiError> {
    text.parse().map_err(|_| ApiError::bad_request("id", "not a UUID"))
}

/// Create a workspace: claim a ready prebuild of the preset, or build a fresh one.
#[utoipa::path(post, path = "/api/v1/workspaces", tag = "workspaces",
    request_body = CreateWorkspace,
    responses(
        (status = 201, description = "Created; `claimed` says whether a prebuild was claimed", body = WorkspaceCreated),
        (status = 400, description = "Invalid input; `field` names it", body = ErrorBody),
        (status = 404, description = "No such template", body = ErrorBody),
        (status = 409, description = "The name is taken, or the template is unavailable", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "The claim's commit failed, so it may or may not have been made; a retry finds the name taken if it was", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateWorkspace>,
) -> Result<(StatusCode, Json<WorkspaceCreated>), ApiError> {
    // Parse, then apply: every field is checked before the store is asked for anything.
    validate_name(&body.name)?;
    let ttl_secs = body.ttl_secs.map(|t| validate_ttl("ttl_secs", t)).transpose()?;
    let autostart_schedule = validate_autostart(body.autostart_schedule.as_deref())?;
    let organization = body.organization.as_deref().unwrap_or(crate::db::DEFAULT_ORGANIZATION_NAME);
    let asked = TemplateName {
        organization: organization.to_owned(),
        template: body.template.clone(),
        preset: body.preset.clone(),
    };
    let found = state
        .templates
        .find(asked)
        .await?
        .ok_or_else(|| ApiError::not_found("template").at("template"))?;
    let preset_id = match (&body.preset, found.preset_id) {
        (Some(_), None) => {
            return Err(ApiError::bad_request(
                "preset",
                "no such preset in the template's active version",
            ))
        }
        (_, preset_id) => preset_id,
    };
    let request = ClaimRequest {
        user_id: caller.0.id,
        template_id: found.template_id,
        preset_id,
        name: body.name,
        autostart_schedule,
        ttl_secs,
        parameters: body.parameters,
    };
    let started = std::time::Instant::now();
    let outcome = state.claims.claim_or_create(Utc::now(), &request).await?;
    if let (true, Some(metrics)) = (outcome.claimed, &state.metrics) {
        metrics.claim_seconds.observe(started.elapsed().as_secs_f64());
    }
    let workspace =
        WorkspaceJson::new(outcome.workspace, Some(outcome.build), Some(JobStatus::Pending));
    Ok((StatusCode::CREATED, Json(WorkspaceCreated { workspace, claimed: outcome.claimed })))
}

/// Default and largest page of `GET /workspaces`.
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

/// `limit` and `after`, each checked and named on error.
fn parse_page(pairs: &[(String, String)]) -> Result<(i64, Option<Uuid>), ApiError> {
    let (mut limit, mut after) = (DEFAULT_PAGE, None);
    for (key, value) in pairs {
        nul_free(key, value)?;
        match key.as_str() {
            "limit" => {
                limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| ApiError::bad_request(key, "an integer from 1 to 1000"))?;
            }
            "after" => {
                after = Some(
                    value.parse().map_err(|_| ApiError::bad_request(key, "not a workspace id"))?,
                );
            }
            other => return Err(ApiError::bad_request(other, "unknown query parameter")),
        }
    }
    Ok((limit, after))
}

/// The caller's live workspaces (every workspace for owners), oldest first, a page at a
/// time: pass the last id of a page as `after` for the next; a short page is the last.
#[utoipa::path(get, path = "/api/v1/workspaces", tag = "workspaces",
    params(
        ("limit" = Option<i64>, Query, description = "At most this many workspaces, 1 to 1000 (default 100)"),
        ("after" = Option<Uuid>, Query, description = "The id of the last workspace of the previous page"),
    ),
    responses(
        (status = 200, description = "One page, in creation order", body = [WorkspaceJson]),
        (status = 400, description = "A bad `limit` or `after`; `field` names it", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Vec<WorkspaceJson>>, ApiError> {
    let Query(pairs) = query.map_err(|err| ApiError::bad_request("", err.body_text()))?;
    let (limit, after) = parse_page(&pairs)?;
    let owner = if caller.is_owner() { None } else { Some(caller.0.id) };
    let views = list_page(&state.pool, PageRequest { owner, after, limit }).await.map_err(
        |err| match err {
            PageError::UnknownCursor => ApiError::bad_request("after", err.to_string()),
            PageError::Store(err) => err.into(),
        },
    )?;
    Ok(Json(views.into_iter().map(WorkspaceJson::from_view).collect()))
}

/// The workspace, if the caller may do `action` to it (404 / 403 otherwise).
async fn authorized(
    state: &ApiState,
    caller: &Caller,
    id: &str,
    action: WorkspaceAction,
) -> Result<WorkspaceView, ApiError> {
    let id = parse_id(id)?;
    let view = store::get(&state.pool, id).await?;
    caller.check(&view.workspace, action)?;
    Ok(view)
}

/// A workspace with its latest build.
#[utoipa::path(get, path = "/api/v1/workspaces/{id}", tag = "workspaces",
    params(("id" = Uuid, Path, description = "The workspace's id")),
    responses(
        (status = 200, description = "The workspace", body = WorkspaceJson),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 404, description = "No such workspace, or not yours to see", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<WorkspaceJson>, ApiError> {
    let view = authorized(&state, &caller, &id, WorkspaceAction::Read).await?;
    Ok(Json(WorkspaceJson::from_view(view)))
}

async fn build(
    state: &ApiState,
    caller: &Caller,
    id: &str,
    transition: Transition,
) -> Result<(StatusCode, Json<WorkspaceJson>), ApiError> {
    let action = match transition {
        Transition::Delete => WorkspaceAction::Delete,
        Transition::Start | Transition::Stop => WorkspaceAction::Operate,
    };
    let view = authorized(state, caller, id, action).await?;
    let actor = caller.actor();
    store::transition(&state.pool, view.workspace.id, transition, &actor, Utc::now()).await?;
    let view = store::get(&state.pool, view.workspace.id).await?;
    Ok((StatusCode::ACCEPTED, Json(WorkspaceJson::from_view(view))))
}

/// Start a workspace (a new build).
#[utoipa::path(post, path = "/api/v1/workspaces/{id}/start", tag = "workspaces",
    params(("id" = Uuid, Path, description = "The workspace's id")),
    responses(
        (status = 202, description = "The start build is queued", body = WorkspaceJson),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 403, description = "Your role may not do this to a prebuilt workspace", body = ErrorBody),
        (status = 404, description = "No such workspace, or not yours to see", body = ErrorBody),
        (status = 409, description = "The latest build is still running, or the template refuses it", body = ErrorBody),
    ))]
pub async fn start(
    State(state): State<ApiState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<(StatusCode, Json<WorkspaceJson>), ApiError> {
    build(&state, &caller, &id, Transition::Start).await
}

/// Stop a workspace (a new build).
#[utoipa::path(post, path = "/api/v1/workspaces/{id}/stop", tag = "workspaces",
    params(("id" = Uuid, Path, description = "The workspace's id")),
    responses(
        (status = 202, description = "The stop build is queued", body = WorkspaceJson),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 403, description = "Your role may not do this to a prebuilt workspace", body = ErrorBody),
        (status = 404, description = "No such workspace, or not yours to see", body = ErrorBody),
        (status = 409, description = "The latest build is still running, or the template refuses it", body = ErrorBody),
    ))]
pub async fn stop(
    State(state): State<ApiState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<(StatusCode, Json<WorkspaceJson>), ApiError> {
    build(&state, &caller, &id, Transition::Stop).await
}

/// Delete a workspace (a delete build).
#[utoipa::path(delete, path = "/api/v1/workspaces/{id}", tag = "workspaces",
    params(("id" = Uuid, Path, description = "The workspace's id")),
    responses(
        (status = 202, description = "The delete build is queued", body = WorkspaceJson),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 403, description = "Your role may not do this to a prebuilt workspace", body = ErrorBody),
        (status = 404, description = "No such workspace, or not yours to see", body = ErrorBody),
        (status = 409, description = "The latest build is still running, or the template refuses it", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<ApiState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<(StatusCode, Json<WorkspaceJson>), ApiError> {
    build(&state, &caller, &id, Transition::Delete).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAutostart {
    /// A weekly cron; null or "" clears it.
    pub schedule: Option<String>,
}

/// Set or clear the autostart schedule.
#[utoipa::path(put, path = "/api/v1/workspaces/{id}/autostart", tag = "workspaces",
    params(("id" = Uuid, Path, description = "The workspace's id")),
    request_body = SetAutostart,
    responses(
        (status = 200, description = "The workspace with its new schedule", body = WorkspaceJson),
        (status = 400, description = "Not a UUID, or not a schedule; `field` names it", body = ErrorBody),
        (status = 403, description = "Your role may not do this to a prebuilt workspace", body = ErrorBody),
        (status = 404, description = "No such workspace, or not yours to see", body = ErrorBody),
        (status = 409, description = "The template does not allow user autostart schedules", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
    ))]
pub async fn set_autostart(
    State(state): State<ApiState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<SetAutostart>,
) -> Result<Json<WorkspaceJson>, ApiError> {
    let schedule = validate_autostart(body.schedule.as_deref())
        .map_err(|err| ApiError { field: Some("schedule".to_owned()), ..err })?;
    let view = authorized(&state, &caller, &id, WorkspaceAction::Operate).await?;
    let actor = caller.actor();
    let workspace =
        store::set_autostart(&state.pool, view.workspace.id, schedule.as_ref(), &actor, Utc::now())
            .await?;
    Ok(Json(WorkspaceJson::new(workspace, view.latest_build, view.job_status)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTtl {
    /// Seconds; 0 = no TTL.
    pub ttl_secs: i64,
}

/// Set the TTL (seconds, 0 = none; at most 30 days).
#[utoipa::path(put, path = "/api/v1/workspaces/{id}/ttl", tag = "workspaces",
    params(("id" = Uuid, Path, description = "The workspace's id")),
    request_body = SetTtl,
    responses(
        (status = 200, description = "The workspace with its new TTL", body = WorkspaceJson),
        (status = 400, description = "Not a UUID, or a TTL out of range; `field` names it", body = ErrorBody),
        (status = 403, description = "Your role may not do this to a prebuilt workspace", body = ErrorBody),
        (status = 404, description = "No such workspace, or not yours to see", body = ErrorBody),
        (status = 409, description = "The template does not allow users to set a TTL", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
    ))]
pub async fn set_ttl(
    State(state): State<ApiState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<SetTtl>,
) -> Result<Json<WorkspaceJson>, ApiError> {
    let ttl = validate_ttl("ttl_secs", body.ttl_secs)?;
    let view = authorized(&state, &caller, &id, WorkspaceAction::Operate).await?;
    let actor = caller.actor();
    let workspace = store::set_ttl(&state.pool, view.workspace.id, ttl, &actor, Utc::now()).await?;
    Ok(Json(WorkspaceJson::new(workspace, view.latest_build, view.job_status)))
}

/// Report activity: bumps `last_used_at` and a near deadline, wakes a dormant workspace.
#[utoipa::path(post, path = "/api/v1/workspaces/{id}/activity", tag = "workspaces",
    params(("id" = Uuid, Path, description = "The workspace's id")),
    responses(
        (status = 200, description = "The workspace after the report", body = WorkspaceJson),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 403, description = "Your role may not do this to a prebuilt workspace", body = ErrorBody),
        (status = 404, description = "No such workspace, or not yours to see", body = ErrorBody),
    ))]
pub async fn activity(
    State(state): State<ApiState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<WorkspaceJson>, ApiError> {
    let view = authorized(&state, &caller, &id, WorkspaceAction::Operate).await?;
    let actor = caller.actor();
    let workspace =
        store::record_activity(&state.pool, view.workspace.id, &actor, Utc::now()).await?;
    Ok(Json(WorkspaceJson::new(workspace, view.latest_build, view.job_status)))
}
