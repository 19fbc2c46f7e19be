//! Leader leases: one row per daemon loop (`leader_leases`). A replica leads a loop while
//! it holds an unexpired lease; it renews the lease every cycle, and another replica takes
//! the lease over once it has expired, bumping the fencing token. Times are the database's
//! (`now()`), so clock skew between replicas cannot extend or cut short a lease.

use std::time::Duration;

use diesel::sql_types::{BigInt, Double, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::rows::Prepared;
use super::StoreError;

/// Proof of leadership that a write carries into its own transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub loop_name: &'static str,
    pub holder: String,
    pub token: i64,
}

#[derive(diesel::QueryableByName)]
struct Token {
    #[diesel(sql_type = BigInt)]
    token: i64,
}

/// Takes the lease of `loop_name` for `holder`, or renews it, for `ttl`. `None` when another
/// holder's lease has not expired yet. The token stays the same while the holder does.
pub async fn acquire_or_renew(
    conn: &mut AsyncPgConnection,
    loop_name: &'static str,
    holder: &str,
    ttl: Duration,
) -> Result<Option<Fence>, StoreError> {
    let row: Option<Token> = Prepared::new(
        diesel::sql_query(
            "INSERT INTO leader_leases AS l
                 (loop_name, holder, token, acquired_at, renewed_at, expires_at)
             VALUES ($1, $2, 1, now(), now(), now() + make_interval(secs => $3))
             ON CONFLICT (loop_name) DO UPDATE SET
                 token = CASE WHEN l.holder = EXCLUDED.holder THEN l.token ELSE l.token + 1 END,
                 acquired_at = CASE WHEN l.holder = EXCLUDED.holder
                                    THEN l.acquired_at ELSE now() END,
                 holder = EXCLUDED.holder,
                 renewed_at = now(),
                 expires_at = EXCLUDED.expires_at
             WHERE l.holder = EXCLUDED.holder OR l.expires_at <= now()
             RETURNING l.token",
        )
        .bind::<Text, _>(loop_name)
        .bind::<Text, _>(holder)
        .bind::<Double, _>(ttl.as_secs_f64()),
    )
    .get_result(conn)
    .await
    .map(Some)
    .or_else(not_found_is_none)?;
    Ok(row.map(|row| Fence { loop_name, holder: holder.to_owned(), token: row.token }))
}

/// Gives the lease up at once (graceful shutdown), so another replica need not wait for it
/// to expire.
pub async fn release(conn: &mut AsyncPgConnection, fence: &Fence) -> Result<(), StoreError> {
    diesel::sql_query(
        "UPDATE leader_leases SET expires_at = now()
         WHERE loop_name = $1 AND holder = $2 AND token = $3 AND expires_at > now()",
    )
    .bind::<Text, _>(fence.loop_name)
    .bind::<Text, _>(&fence.holder)
    .bind::<BigInt, _>(fence.token)
    .execute(conn)
    .await?;
    Ok(())
}

impl Fence {
    /// Checks, inside the caller's transaction, that this lease is still held and unexpired,
    /// and keeps it so until that transaction ends: `FOR SHARE` makes a takeover (an update
    /// of the row) wait for the write to commit, while fenced writes never wait for each
    /// other.
    pub async fn check(&self, conn: &mut AsyncPgConnection) -> Result<(), StoreError> {
        let held: Option<Token> = Prepared::new(
            diesel::sql_query(
                "SELECT token FROM leader_leases
                 WHERE loop_name = $1 AND holder = $2 AND token = $3 AND expires_at > now()
                 FOR SHARE",
            )
            .bind::<Text, _>(self.loop_name)
            .bind::<Text, _>(&self.holder)
            .bind::<BigInt, _>(self.token),
        )
        .get_result(conn)
        .await
        .map(Some)
        .or_else(not_found_is_none)?;
        match held {
            Some(_) => Ok(()),
            None => Err(StoreError::Fenced { loop_name: self.loop_name, token: self.token }),
        }
    }
}

fn not_found_is_none<T>(err: diesel::result::Error) -> Result<Option<T>, diesel::result::Error> {
    match err {
        diesel::result::Error::NotFound => Ok(None),
        err => Err(err),
    }
}
