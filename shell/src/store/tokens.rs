//! API tokens as an administrator sees them: list (never a secret or its hash) and revoke.
//! Revoking deletes the row, so the token stops working at once; the audit entry keeps
//! what it was.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

use super::audit::{self, Actor, Change};
use super::auth::AuthError;
use crate::db::schema::{api_tokens, users};
use crate::db::DbPool;

/// One token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct TokenInfo {
    pub id: Uuid,
    pub user_id: Uuid,
    pub username: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

type TokenColumns = (
    api_tokens::id,
    api_tokens::user_id,
    users::username,
    api_tokens::name,
    api_tokens::created_at,
    api_tokens::expires_at,
    api_tokens::last_used_at,
);

const TOKEN_COLUMNS: TokenColumns = (
    api_tokens::id,
    api_tokens::user_id,
    users::username,
    api_tokens::name,
    api_tokens::created_at,
    api_tokens::expires_at,
    api_tokens::last_used_at,
);

/// The tokens of `user` (every user's with `None`), by username, then name.
pub async fn list_tokens(pool: &DbPool, user: Option<Uuid>) -> Result<Vec<TokenInfo>, AuthError> {
    let mut conn = pool.get().await?;
    let mut query = api_tokens::table.inner_join(users::table).select(TOKEN_COLUMNS).into_boxed();
    if let Some(user) = user {
        query = query.filter(api_tokens::user_id.eq(user));
    }
    Ok(query.order((users::username, api_tokens::name)).load(&mut conn).await?)
}

/// Revokes (deletes) token `id`, audited for `actor`. With `owned_by`, only a token of that
/// user is revoked: any other is reported as not found, whether or not it exists.
pub async fn revoke_token(
    pool: &DbPool,
    id: Uuid,
    owned_by: Option<Uuid>,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Option<TokenInfo>, AuthError> {
    let mut conn = pool.get().await?;
    conn.transaction::<_, AuthError, _>(async |conn| {
        let token: Option<TokenInfo> = api_tokens::table
            .inner_join(users::table)
            .filter(api_tokens::id.eq(id))
            .for_update()
            .select(TOKEN_COLUMNS)
            .first(conn)
            .await
            .optional()?;
        let Some(token) = token.filter(|t| owned_by.is_none_or(|user| t.user_id == user)) else {
            return Ok(None);
        };
        diesel::delete(api_tokens::table.find(id)).execute(conn).await?;
        let change = Change {
            action: "token_revoke",
            resource_type: "api_token",
            resource_id: Some(id),
            diff: serde_json::json!({
                "old": {
                    "user_id": token.user_id,
                    "username": token.username,
                    "name": token.name,
                    "expires_at": token.expires_at,
                },
            }),
        };
        audit::record(conn, now, actor, change).await?;
        Ok(Some(token))
    })
    .await
}
