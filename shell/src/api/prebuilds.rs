//! `/api/v1/prebuilds` and `/api/v1/presets`: pool status, the reconciler's pause switch,
//! invalidating a preset's prebuilds.

use axum::extract::State;
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::body::JsonBody;
use super::error::ApiError;
use super::path::PathParams;
use super::ApiState;
use crate::store::pools::{pool_status, PresetPoolStatus};
use crate::store::settings::{reconciliation_paused, set_reconciliation_paused_by};
use crate::store::templates::invalidate_preset;
use crate::store::StoreError;

#[derive(Debug, Serialize)]
pub struct Status {
    pub reconciliation_paused: bool,
    pub presets: Vec<PresetPoolStatus>,
}

pub async fn status(
    State(state): State<ApiState>,
    _caller: Caller,
) -> Result<Json<Status>, ApiError> {
    let presets = pool_status(&state.pool, Utc::now()).await?;
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    let paused = reconciliation_paused(&mut conn).await?;
    Ok(Json(Status { reconciliation_paused: paused, presets }))
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub reconciliation_paused: bool,
}

pub async fn put_settings(
    State(state): State<ApiState>,
    caller: Caller,
    JsonBody(body): JsonBody<Settings>,
) -> Result<Json<Settings>, ApiError> {
    if !caller.is_owner() {
        return Err(ApiError::forbidden("only owners may pause or resume prebuilds"));
    }
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    set_reconciliation_paused_by(&mut conn, body.reconciliation_paused, &caller.actor()).await?;
    tracing::info!(user = %caller.0.username, paused = body.reconciliation_paused, "prebuild reconciliation switched");
    Ok(Json(body))
}

#[derive(Debug, Serialize)]
pub struct Invalidated {
    pub preset_id: uuid::Uuid,
    pub invalidated_at: chrono::DateTime<Utc>,
}

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
