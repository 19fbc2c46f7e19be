//! Dashboard sessions (`dashboard_sessions`): opened by pasting an API token, held by the
//! browser as a random id whose SHA-256 alone is stored. A session never outlives its token:
//! revoking the token deletes it (foreign key), and every lookup re-checks the token's expiry
//! and the user's status, as the API does for a bearer token.

use chrono::{DateTime, TimeDelta, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

use super::auth::hash_secret;
use super::StoreError;
use crate::db::enums::{UserRole, UserStatus};
use crate::db::models::User;
use crate::db::schema::{api_tokens, dashboard_sessions, users};
use crate::db::DbPool;

/// An open session: what the browser keeps (the secret, in a cookie) and what its forms echo.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub user: User,
    /// Shown once, to be set as the cookie; only its hash is stored.
    pub secret: String,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// How a sign-in went.
#[derive(Debug, Clone, PartialEq)]
pub enum SignIn {
    /// No live token with that secret (unknown, expired, revoked, or its user suspended).
    UnknownToken,
    /// A valid token whose user's role may not sign in.
    RoleRefused(User),
    Opened(Session),
}

/// The user of a live session, and its CSRF token.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionUser {
    pub user: User,
    pub csrf_token: String,
}

/// Two v4 UUIDs: 244 bits from the OS's random source (as API tokens).
fn random_secret(prefix: &str) -> String {
    format!("{prefix}{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

/// Opens a session for the user of the API token `token_secret` if its role is one of
/// `roles`, lasting `lifetime` but never past the token's own expiry. Expired sessions of
/// anyone are deleted on the way (the table stays as small as the signed-in operators).
pub async fn open_session(
    pool: &DbPool,
    token_secret: &str,
    roles: &[UserRole],
    now: DateTime<Utc>,
    lifetime: TimeDelta,
) -> Result<SignIn, StoreError> {
    let mut conn = pool.get().await?;
    let token_hash = hash_secret(token_secret);
    conn.transaction::<_, StoreError, _>(async |conn| {
        diesel::delete(dashboard_sessions::table.filter(dashboard_sessions::expires_at.le(now)))
            .execute(conn)
            .await?;
        let found: Option<(Uuid, DateTime<Utc>, User)> = api_tokens::table
            .inner_join(users::table)
            .filter(api_tokens::secret_hash.eq(&token_hash))
            .filter(api_tokens::expires_at.gt(now))
            .filter(users::status.eq(UserStatus::Active))
            .filter(users::is_system.eq(false))
            .select((api_tokens::id, api_tokens::expires_at, User::as_select()))
            .first(conn)
            .await
            .optional()?;
        let Some((token_id, token_expires_at, user)) = found else {
            return Ok(SignIn::UnknownToken);
        };
        if !roles.contains(&user.role) {
            return Ok(SignIn::RoleRefused(user));
        }
        let secret = random_secret("pks_");
        let csrf_token = random_secret("");
        let expires_at = (now + lifetime).min(token_expires_at);
        diesel::insert_into(dashboard_sessions::table)
            .values((
                dashboard_sessions::id_hash.eq(hash_secret(&secret)),
                dashboard_sessions::token_id.eq(token_id),
                dashboard_sessions::csrf_token.eq(&csrf_token),
                dashboard_sessions::created_at.eq(now),
                dashboard_sessions::expires_at.eq(expires_at),
            ))
            .execute(conn)
            .await?;
        Ok(SignIn::Opened(Session { user, secret, csrf_token, expires_at }))
    })
    .await
}

/// The user and CSRF token of the live session `secret`: unexpired, its token unexpired, its
/// user active. `None` otherwise.
pub async fn session_user(
    pool: &DbPool,
    secret: &str,
    now: DateTime<Utc>,
) -> Result<Option<SessionUser>, StoreError> {
    let mut conn = pool.get().await?;
    let found: Option<(String, User)> = dashboard_sessions::table
        .inner_join(api_tokens::table.inner_join(users::table))
        .filter(dashboard_sessions::id_hash.eq(hash_secret(secret)))
        .filter(dashboard_sessions::expires_at.gt(now))
        .filter(api_tokens::expires_at.gt(now))
        .filter(users::status.eq(UserStatus::Active))
        .filter(users::is_system.eq(false))
        .select((dashboard_sessions::csrf_token, User::as_select()))
        .first(&mut conn)
        .await
        .optional()?;
    Ok(found.map(|(csrf_token, user)| SessionUser { user, csrf_token }))
}

/// Ends the session `secret` (sign-out); `false` if there was none.
pub async fn close_session(pool: &DbPool, secret: &str) -> Result<bool, StoreError> {
    let mut conn = pool.get().await?;
    let deleted = diesel::delete(
        dashboard_sessions::table.filter(dashboard_sessions::id_hash.eq(hash_secret(secret))),
    )
    .execute(&mut conn)
    .await?;
    Ok(deleted > 0)
}
