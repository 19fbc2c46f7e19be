//! `/api/v1/users`: list users, suspend and reactivate them (owners), set quiet hours (owners
//! for anyone, every user for themselves). `{user}` is a username, or `me` for the caller.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use poolkeeper_core::schedule::parse_quiet_hours;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::Caller;
use super::body::{nul_free, JsonBody};
use super::error::{ApiError, ErrorBody};
use super::path::PathParams;
use super::ApiState;
use crate::db::enums::{UserRole, UserStatus};
use crate::db::models::User;
use crate::store::auth::AuthError;
use crate::store::users::{list_users, set_quiet_hours, set_status};

/// A user as the API and `users list -o json` show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserJson {
    pub id: Uuid,
    pub username: String,
    pub role: UserRole,
    pub status: UserStatus,
    /// `null`: the default quiet hours (`CRON_TZ=UTC 0 0 * * *`).
    pub quiet_hours_schedule: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<User> for UserJson {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            username: u.username,
            role: u.role,
            status: u.status,
            quiet_hours_schedule: u.quiet_hours_schedule,
            created_at: u.created_at,
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::UnknownUser(_) => Self::not_found("user").at("user"),
            AuthError::UserExists(_) => Self::new(StatusCode::CONFLICT, err.to_string()),
            AuthError::Invalid(message) => Self::bad_request("", message),
            AuthError::Store(err) => err.into(),
        }
    }
}

/// The username `{user}` names (`me` is the caller), and whether that is the caller.
fn named(caller: &Caller, user: &str) -> Result<(String, bool), ApiError> {
    nul_free("user", user)?;
    let name = if user == "me" { caller.0.username.clone() } else { user.to_owned() };
    let own = name == caller.0.username;
    Ok((name, own))
}

fn owners_only(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_owner() {
        Ok(())
    } else {
        Err(ApiError::forbidden("only owners may administer users"))
    }
}

/// Every user, by username (owners).
#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    responses(
        (status = 200, description = "Users by username", body = [UserJson]),
        (status = 403, description = "Not an owner", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<Vec<UserJson>>, ApiError> {
    owners_only(&caller)?;
    let users = list_users(&state.pool).await?;
    Ok(Json(users.into_iter().map(UserJson::from).collect()))
}

/// Suspend a user (owners): their tokens stop working; the lifecycle executor stops their
/// workspaces and does not autostart them.
#[utoipa::path(post, path = "/api/v1/users/{user}/suspend", tag = "users",
    params(("user" = String, Path, description = "A username, or `me`")),
    responses(
        (status = 200, description = "The user, suspended", body = UserJson),
        (status = 400, description = "A bad path segment", body = ErrorBody),
        (status = 403, description = "Not an owner", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "Owners cannot suspend themselves", body = ErrorBody),
    ))]
pub async fn suspend(
    State(state): State<ApiState>,
    caller: Caller,
    PathParams(user): PathParams<String>,
) -> Result<Json<UserJson>, ApiError> {
    owners_only(&caller)?;
    let (name, own) = named(&caller, &user)?;
    if own {
        // Locking oneself out of the API is never what an owner means.
        return Err(ApiError::new(StatusCode::CONFLICT, "you cannot suspend yourself").at("user"));
    }
    let user =
        set_status(&state.pool, &name, UserStatus::Suspended, &caller.actor(), Utc::now()).await?;
    Ok(Json(user.into()))
}

/// Make a suspended or dormant user active again (owners).
#[utoipa::path(post, path = "/api/v1/users/{user}/activate", tag = "users",
    params(("user" = String, Path, description = "A username, or `me`")),
    responses(
        (status = 200, description = "The user, active", body = UserJson),
        (status = 400, description = "A bad path segment", body = ErrorBody),
        (status = 403, description = "Not an owner", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ))]
pub async fn activate(
    State(state): State<ApiState>,
    caller: Caller,
    PathParams(user): PathParams<String>,
) -> Result<Json<UserJson>, ApiError> {
    owners_only(&caller)?;
    let (name, _) = named(&caller, &user)?;
    let user =
        set_status(&state.pool, &name, UserStatus::Active, &caller.actor(), Utc::now()).await?;
    Ok(Json(user.into()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetQuietHours {
    /// A daily cron schedule with one minute and one hour, e.g.
    /// `CRON_TZ=Europe/Berlin 0 2 * * *`; `null` or "" restores the default.
    pub quiet_hours_schedule: Option<String>,
}

/// Set a user's quiet hours (owners for anyone; every user for themselves).
#[utoipa::path(put, path = "/api/v1/users/{user}/quiet-hours", tag = "users",
    params(("user" = String, Path, description = "A username, or `me`")),
    request_body = SetQuietHours,
    responses(
        (status = 200, description = "The user with the new quiet hours", body = UserJson),
        (status = 400, description = "Not a daily schedule, or a malformed body", body = ErrorBody),
        (status = 403, description = "Another user's, and not an owner", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
    ))]
pub async fn put_quiet_hours(
    State(state): State<ApiState>,
    caller: Caller,
    PathParams(user): PathParams<String>,
    JsonBody(body): JsonBody<SetQuietHours>,
) -> Result<Json<UserJson>, ApiError> {
    let (name, own) = named(&caller, &user)?;
    if !own && !caller.is_owner() {
        return Err(ApiError::forbidden("only owners may set another user's quiet hours"));
    }
    // Parse, then apply: the core's parser, so deadlines read exactly what is stored.
    let schedule = body
        .quiet_hours_schedule
        .as_deref()
        .filter(|text| !text.trim().is_empty())
        .map(|text| {
            parse_quiet_hours(text)
                .map_err(|err| ApiError::bad_request("quiet_hours_schedule", err.to_string()))
        })
        .transpose()?;
    let user =
        set_quiet_hours(&state.pool, &name, schedule.as_ref(), &caller.actor(), Utc::now()).await?;
    Ok(Json(user.into()))
}
