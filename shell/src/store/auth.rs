//! Users and API tokens. A token is `pk_<random>`; only its SHA-256 is stored, and lookups
//! go by that hash, so the database never holds a usable secret.

use chrono::{DateTime, TimeDelta, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::audit::{self, Actor, Change};
use super::rows::Prepared;
use super::StoreError;
use crate::db::enums::{UserRole, UserStatus};
use crate::db::models::{NewApiToken, NewUser, User};
use crate::db::schema::{api_tokens, users};
use crate::db::DbPool;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("user {0:?} already exists")]
    UserExists(String),
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AuthError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::UserExists(_) => "user_exists",
            Self::UnknownUser(_) => "unknown_user",
            Self::Invalid(_) => "invalid_input",
            Self::Store(err) => err.label(),
        }
    }
}

impl From<diesel::result::Error> for AuthError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Store(StoreError::Query(err))
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for AuthError {
    fn from(err: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        Self::Store(err.into())
    }
}

/// The non-system user named `username`, if any.
pub async fn find_user(pool: &DbPool, username: &str) -> Result<Option<User>, AuthError> {
    let mut conn = pool.get().await?;
    Ok(users::table
        .filter(users::username.eq(username))
        .filter(users::is_system.eq(false))
        .select(User::as_select())
        .first(&mut conn)
        .await
        .optional()?)
}

/// Creates an active, non-system user (audited as done from the command line).
pub async fn create_user(
    pool: &DbPool,
    username: &str,
    role: UserRole,
    now: DateTime<Utc>,
) -> Result<User, AuthError> {
    create_user_by(pool, username, role, &Actor::cli(), now).await
}

/// [`create_user`] on behalf of `actor`, with its audit entry in the same transaction.
pub async fn create_user_by(
    pool: &DbPool,
    username: &str,
    role: UserRole,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<User, AuthError> {
    if username.trim().is_empty() {
        return Err(AuthError::Invalid("username: must not be empty".to_owned()));
    }
    let mut conn = pool.get().await?;
    conn.transaction::<_, AuthError, _>(async |conn| {
        let result = diesel::insert_into(users::table)
            .values(NewUser {
                id: Uuid::new_v4(),
                username: username.to_owned(),
                email: String::new(),
                status: UserStatus::Active,
                role,
                is_system: false,
                quiet_hours_schedule: None,
            })
            .returning(User::as_returning())
            .get_result(conn)
            .await;
        let user = match result {
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => return Err(AuthError::UserExists(username.to_owned())),
            other => other?,
        };
        let change = Change {
            action: "user_create",
            resource_type: "user",
            resource_id: Some(user.id),
            diff: serde_json::json!({ "new": { "username": user.username, "role": user.role } }),
        };
        audit::record(conn, now, actor, change).await?;
        Ok(user)
    })
    .await
}

/// A new token for `username`, valid for `lifetime`; the secret is returned once and never
/// stored (nor audited: the audit entry names the token, not its secret).
pub async fn create_token(
    pool: &DbPool,
    username: &str,
    name: &str,
    lifetime: TimeDelta,
    now: DateTime<Utc>,
) -> Result<(String, DateTime<Utc>), AuthError> {
    let mut conn = pool.get().await?;
    conn.transaction::<_, AuthError, _>(async |conn| {
        create_token_in(conn, username, name, lifetime, now).await
    })
    .await
}

async fn create_token_in(
    conn: &mut AsyncPgConnection,
    username: &str,
    name: &str,
    lifetime: TimeDelta,
    now: DateTime<Utc>,
) -> Result<(String, DateTime<Utc>), AuthError> {
    let user: User = users::table
        .filter(users::username.eq(username))
        .filter(users::is_system.eq(false))
        .select(User::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| AuthError::UnknownUser(username.to_owned()))?;
    // Two v4 UUIDs: 244 bits from the OS's random source.
    let secret = format!("pk_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let expires_at = now + lifetime;
    let name = if name.is_empty() {
        format!("token-{}", Uuid::new_v4().simple())
    } else {
        name.to_owned()
    };
    let token_id = Uuid::new_v4();
    diesel::insert_into(api_tokens::table)
        .values(NewApiToken {
            id: token_id,
            user_id: user.id,
            name: name.clone(),
            secret_hash: hash_secret(&secret),
            expires_at,
        })
        .execute(conn)
        .await
        .map_err(|err| match err {
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            ) => AuthError::Invalid("name: the user already has a token of that name".to_owned()),
            other => other.into(),
        })?;
    let change = Change {
        action: "token_create",
        resource_type: "api_token",
        resource_id: Some(token_id),
        diff: serde_json::json!({
            "new": { "user_id": user.id, "username": user.username, "name": name, "expires_at": expires_at },
        }),
    };
    audit::record(conn, now, &Actor::cli(), change).await?;
    Ok((secret, expires_at))
}

/// How stale a token's `last_used_at` may get before a request rewrites it.
const LAST_USED_PRECISION_SECS: i64 = 60;

/// The active, non-system user a bearer secret belongs to, if the token exists and has not
/// expired at `now`. Records the use at most once a minute per token. One statement: every
/// request of the API runs it.
pub async fn authenticate(
    pool: &DbPool,
    secret: &str,
    now: DateTime<Utc>,
) -> Result<Option<User>, StoreError> {
    let mut conn = pool.get().await?;
    let stale = now - chrono::TimeDelta::seconds(LAST_USED_PRECISION_SECS);
    let user: Option<User> = Prepared::new(
        diesel::sql_query(AUTHENTICATE_SQL)
            .bind::<Text, _>(hash_secret(secret))
            .bind::<Timestamptz, _>(now)
            .bind::<Timestamptz, _>(stale),
    )
    .get_result(&mut conn)
    .await
    .optional()?;
    Ok(user)
}

// $1 = the secret's hash, $2 = now, $3 = the oldest `last_used_at` left as it is. Every
// request authenticates: recording each use would make every read a write to the token's
// row. A minute is precise enough for "last used".
const AUTHENTICATE_SQL: &str = "
WITH found AS (
    SELECT u.*, t.id AS token_id
      FROM api_tokens t JOIN users u ON u.id = t.user_id
     WHERE t.secret_hash = $1 AND t.expires_at > $2
       AND u.status = 'active' AND NOT u.is_system
), touched AS (
    UPDATE api_tokens SET last_used_at = $2
     WHERE id IN (SELECT token_id FROM found)
       AND (last_used_at IS NULL OR last_used_at <= $3)
)
SELECT id, username, email, status, role, is_system, quiet_hours_schedule, created_at,
       updated_at
  FROM found";

pub(crate) fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}
