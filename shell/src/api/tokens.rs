//! `/api/v1/tokens`: list and revoke API tokens. Every user may list and revoke their own;
//! owners those of anyone. Another user's token is "not found" to a non-owner.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::auth::Caller;
use super::body::nul_free;
use super::error::{ApiError, ErrorBody};
use super::path::PathParams;
use super::ApiState;
use crate::store::auth::find_user;
use crate::store::tokens::{list_tokens, revoke_token, TokenInfo};

/// A token without its secret (which is never stored).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiTokenJson {
    pub id: Uuid,
    pub user_id: Uuid,
    pub username: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<TokenInfo> for ApiTokenJson {
    fn from(t: TokenInfo) -> Self {
        Self {
            id: t.id,
            user_id: t.user_id,
            username: t.username,
            name: t.name,
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
        }
    }
}

/// The tokens of one user, by name.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    params(("user" = Option<String>, Query,
        description = "Whose tokens (a username); the caller's own when absent. Owners may name anyone")),
    responses(
        (status = 200, description = "Tokens by name", body = [ApiTokenJson]),
        (status = 400, description = "An unknown or malformed query parameter", body = ErrorBody),
        (status = 403, description = "Another user's tokens, and not an owner", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Vec<ApiTokenJson>>, ApiError> {
    let Query(pairs) = query.map_err(|err| ApiError::bad_request("", err.body_text()))?;
    let mut user = None;
    for (key, value) in &pairs {
        match key.as_str() {
            "user" => user = Some(value.as_str()),
            other => return Err(ApiError::bad_request(other, "unknown query parameter")),
        }
    }
    let user_id = match user {
        None => caller.0.id,
        Some(name) if name == caller.0.username || name == "me" => caller.0.id,
        Some(name) => {
            nul_free("user", name)?;
            if !caller.is_owner() {
                return Err(ApiError::forbidden("only owners may list another user's tokens"));
            }
            find_user(&state.pool, name)
                .await?
                .ok_or_else(|| ApiError::not_found("user").at("user"))?
                .id
        }
    };
    let tokens = list_tokens(&state.pool, Some(user_id)).await?;
    Ok(Json(tokens.into_iter().map(ApiTokenJson::from).collect()))
}

/// Revoke a token: it stops working at once.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = Uuid, Path, description = "The token's id")),
    responses(
        (status = 200, description = "The revoked token", body = ApiTokenJson),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 404, description = "No such token (or another user's, to a non-owner)", body = ErrorBody),
    ))]
pub async fn revoke(
    State(state): State<ApiState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<ApiTokenJson>, ApiError> {
    let id: Uuid = id.parse().map_err(|_| ApiError::bad_request("id", "not a UUID"))?;
    let owned_by = if caller.is_owner() { None } else { Some(caller.0.id) };
    let revoked = revoke_token(&state.pool, id, owned_by, &caller.actor(), Utc::now())
        .await?
        .ok_or_else(|| ApiError::not_found("token"))?;
    Ok(Json(revoked.into()))
}
