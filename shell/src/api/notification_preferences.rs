//! `GET` and `PUT /api/v1/users/me/notification-preferences`: which notification kinds the
//! caller receives. Every signed-in user manages their own; template admins use it to
//! choose whether they hear of hard-limited presets and replaced prebuild resources.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::body::JsonBody;
use super::error::{ApiError, ErrorBody};
use super::ApiState;
use crate::store::delivery::{preferences, set_preferences};
use crate::store::notifications::Kind;

/// Every kind, on (`true`) or off.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    pub preferences: BTreeMap<String, bool>,
}

/// The notification kinds the caller receives.
#[utoipa::path(get, path = "/api/v1/users/me/notification-preferences", tag = "users",
    responses((status = 200, description = "Every kind, on or off", body = Preferences)))]
pub async fn get(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<Preferences>, ApiError> {
    current(&state, &caller).await
}

/// Sets the kinds named in the body (the others keep their setting), all or none; answers
/// with all.
#[utoipa::path(put, path = "/api/v1/users/me/notification-preferences", tag = "users",
    request_body = Preferences,
    responses(
        (status = 200, description = "Every kind, on or off", body = Preferences),
        (status = 400, description = "An unknown kind, or a malformed body", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ))]
pub async fn put(
    State(state): State<ApiState>,
    caller: Caller,
    JsonBody(body): JsonBody<Preferences>,
) -> Result<Json<Preferences>, ApiError> {
    // Parse every kind before writing any, so bad input changes nothing.
    let mut changes = Vec::with_capacity(body.preferences.len());
    for (kind, enabled) in &body.preferences {
        let parsed: Kind = kind.parse().map_err(|_| {
            let kinds: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            ApiError::bad_request(
                format!("preferences.{kind}"),
                format!("not a notification kind (one of {})", kinds.join(", ")),
            )
        })?;
        changes.push((parsed, *enabled));
    }
    let now = Utc::now();
    set_preferences(&state.pool, caller.0.id, &changes, now).await?;
    tracing::info!(user = %caller.0.username, changed = body.preferences.len(), "notification preferences set");
    current(&state, &caller).await
}

async fn current(state: &ApiState, caller: &Caller) -> Result<Json<Preferences>, ApiError> {
    let all = preferences(&state.pool, caller.0.id).await?;
    Ok(Json(Preferences {
        preferences: all.into_iter().map(|p| (p.kind.as_str().to_owned(), p.enabled)).collect(),
    }))
}
