//! `/api/v1/prebuilds` and `/api/v1/presets`: pool status, the reconciler's pause switch,
//! invalidating a preset's prebuilds.

use axum::extract::State;
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::body::JsonBody;
use super::error::{ApiError, ErrorBody};
use super::path::PathParams;
use super::ApiState;
use crate::store::pools::{pool_status, PresetPoolStatus};
use crate::store::settings::{reconciliation_paused, set_reconciliation_paused_by};
use crate::store::templates::invalidate_preset;
use crate::store::StoreError;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PrebuildsStatus {
    pub reconciliation_paused: bool,
    pub presets: Vec<PresetPoolStatus>,
}

/// Prebuild pools of active template versions, and whether reconciliation is paused.
#[utoipa::path(get, path = "/api/v1/prebuilds/status", tag = "prebuilds",
    responses((status = 200, description = "Every pool", body = PrebuildsStatus)))]
pub async fn status(
    State(state): State<ApiState>,
    _caller: Caller,
) -> Result<Json<PrebuildsStatus>, ApiError> {
    let presets = pool_status(&state.pool, Utc::now()).await?;
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    let paused = reconciliation_paused(&mut conn).await?;
    Ok(Json(PrebuildsStatus { reconciliation_paused: paused, presets }))
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrebuildSettings {
    pub reconciliation_paused: bool,
}

/// Pause or resume prebuild reconciliation (owners); claims keep working while paused.
#[utoipa::path(put, path = "/api/v1/prebuilds/settings", tag = "prebuilds",
    request_body = PrebuildSettings,
    responses(
        (status = 200, description = "The settings now", body = PrebuildSettings),
        (status = 400, description = "A malformed body; `field` names it", body = ErrorBody),
        (status = 403, description = "Not an owner", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
    ))]
pub async fn put_settings(
    State(state): State<ApiState>,
    caller: Caller,
    JsonBody(body): JsonBody<PrebuildSettings>,
) -> Result<Json<PrebuildSettings>, ApiError> {
    if !caller.is_owner() {
        return Err(ApiError::forbidden("only owners may pause or resume prebuilds"));
    }
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    set_reconciliation_paused_by(
        &mut conn,
        body.reconciliation_paused,
        &caller.actor(),
        chrono::Utc::now(),
    )
    .await?;
    tracing::info!(user = %caller.0.username, paused = body.reconciliation_paused, "prebuild reconciliation switched");
    Ok(Json(body))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Invalidated {
    pub preset_id: uuid::Uuid,
    pub invalidated_at: chrono::DateTime<Utc>,
}

/// Expire every existing prebuild of a preset (owners, template admins): the reconciler
/// replaces them.
#[utoipa::path(post, path = "/api/v1/presets/{id}/invalidate", tag = "prebuilds",
    params(("id" = uuid::Uuid, Path, description = "The preset's id")),
    responses(
        (status = 200, description = "Invalidated", body = Invalidated),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 403, description = "Neither owner nor template admin", body = ErrorBody),
        (status = 404, description = "No such preset", body = ErrorBody),
    ))]
pub async fn invalidate(
    State(state): State<ApiState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<Invalidated>, ApiError> {
    let preset_id: uuid::Uuid =
        id.parse().map_err(|_| ApiError::bad_request("id", "not a UUID"))?;
    if !caller.manages_templates() {
        return Err(ApiError::forbidden("only owners and template admins may invalidate presets"));
    }
    let now = Utc::now();
    if !invalidate_preset(&state.pool, preset_id, &caller.actor(), now).await? {
        return Err(ApiError::not_found("preset"));
    }
    Ok(Json(Invalidated { preset_id, invalidated_at: now }))
}
