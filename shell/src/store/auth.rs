//! Users and API tokens. A token is `pk_<random>`; only its SHA-256 is stored, and lookups
//! go by that hash, so the database never holds a usable secret.

use chrono::{DateTime, TimeDelta, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::audit::{self, Actor, Change};
use super::batcher::{by_ordinal, BatchWork, Batcher};
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
/// Most secrets one authentication batch looks up.
const MOST_PER_BATCH: usize = 128;
/// Authentication batches at once, each on its own connection.
const BATCHES_AT_ONCE: usize = 2;

/// The active, non-system user a bearer secret belongs to, if the token exists and has not
/// expired at `now`. Records the use at most once a minute per token.
pub async fn authenticate(
    pool: &DbPool,
    secret: &str,
    now: DateTime<Utc>,
) -> Result<Option<User>, StoreError> {
    let mut conn = pool.get().await?;
    let mut users = authenticate_all(&mut conn, &[(hash_secret(secret), now)]).await?;
    Ok(users.pop().flatten())
}

/// Where the API authenticates its requests: secrets that arrive together are looked up
/// together, in one statement, as [`authenticate`] looks up one. Every request of the API
/// authenticates, so under load this is a statement per batch rather than per request.
#[derive(Clone)]
pub struct Authenticator {
    batcher: Batcher<TokenLookup>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("batches", &self.batcher.batches()).finish()
    }
}

struct TokenLookup {
    pool: DbPool,
}

impl Authenticator {
    pub fn new(pool: DbPool) -> Self {
        Self { batcher: Batcher::new(TokenLookup { pool }, MOST_PER_BATCH, BATCHES_AT_ONCE) }
    }

    /// [`authenticate`], in a batch with the other requests of the moment. A batch that
    /// failed leaves each of its requests to look itself up, which reports its own error.
    pub async fn authenticate(
        &self,
        secret: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<User>, StoreError> {
        match self.batcher.submit((hash_secret(secret), now)).await {
            Some(Some(user)) => Ok(user),
            Some(None) | None => authenticate(&self.batcher.work().pool, secret, now).await,
        }
    }

    /// Batches looked up so far (each of one or more secrets).
    pub fn batches(&self) -> u64 {
        self.batcher.batches()
    }
}

impl BatchWork for TokenLookup {
    /// A secret's hash, and when it was presented.
    type Request = (String, DateTime<Utc>);
    /// The user, or `None` when the batch failed.
    type Reply = Option<Option<User>>;

    async fn serve(&self, batch: Vec<(String, DateTime<Utc>)>) -> Vec<Self::Reply> {
        let found = match self.pool.get().await {
            Ok(mut conn) => authenticate_all(&mut conn, &batch).await,
            Err(err) => Err(err.into()),
        };
        match found {
            Ok(users) => users.into_iter().map(Some).collect(),
            Err(error) => {
                tracing::warn!(%error, requests = batch.len(), "an authentication batch failed; its requests look themselves up");
                Vec::new()
            }
        }
    }
}

#[derive(QueryableByName)]
struct Authenticated {
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(embed)]
    user: User,
}

/// The user of each `(secret hash, presented at)`, in order, in one statement (every request
/// of the API runs it); the uses recorded as of the latest instant.
async fn authenticate_all(
    conn: &mut AsyncPgConnection,
    presented: &[(String, DateTime<Utc>)],
) -> Result<Vec<Option<User>>, StoreError> {
    let Some(latest) = presented.iter().map(|(_, at)| *at).max() else {
        return Ok(Vec::new());
    };
    let hashes: Vec<&str> = presented.iter().map(|(hash, _)| hash.as_str()).collect();
    let instants: Vec<DateTime<Utc>> = presented.iter().map(|(_, at)| *at).collect();
    let stale = latest - chrono::TimeDelta::seconds(LAST_USED_PRECISION_SECS);
    let found: Vec<Authenticated> = Prepared::new(
        diesel::sql_query(AUTHENTICATE_SQL)
            .bind::<Array<Text>, _>(hashes)
            .bind::<Array<Timestamptz>, _>(instants)
            .bind::<Timestamptz, _>(latest)
            .bind::<Timestamptz, _>(stale),
    )
    .load(conn)
    .await?;
    Ok(by_ordinal(presented.len(), found.into_iter().map(|row| (row.n, row.user))))
}

// $1 = the secrets' hashes, $2 = when each was presented, $3 = the latest of those, $4 = the
// oldest `last_used_at` left as it is. Every request authenticates: recording each use would
// make every read a write to the token's row. A minute is precise enough for "last used".
const AUTHENTICATE_SQL: &str = "
WITH asked AS (
    SELECT * FROM unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS a(secret_hash, at, n)
), found AS (
    SELECT a.n, u.*, t.id AS token_id
      FROM asked a
      JOIN api_tokens t ON t.secret_hash = a.secret_hash
      JOIN users u ON u.id = t.user_id
     WHERE t.expires_at > a.at AND u.status = 'active' AND NOT u.is_system
), touched AS (
    UPDATE api_tokens SET last_used_at = $3
     WHERE id IN (SELECT token_id FROM found)
       AND (last_used_at IS NULL OR last_used_at <= $4)
)
SELECT n, id, username, email, status, role, is_system, quiet_hours_schedule, created_at,
       updated_at
  FROM found";

pub(crate) fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}
