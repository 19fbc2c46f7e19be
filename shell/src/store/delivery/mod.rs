//! Delivery of the notification outbox: leases of due messages, the outcome of each
//! attempt, retention, and per-user preferences. What to do with a message is decided by
//! `poolkeeper_core::notifications`; this module only reads and writes it.

mod preferences;

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, Bool, Double, Int4, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

pub use preferences::{preferences, set_email, set_preferences, Preference};

use super::StoreError;
use crate::db::enums::{AttemptOutcome, DeliveryMethod, DeliveryStatus};
use crate::db::schema::{notification_attempts, notifications};
use crate::db::DbPool;

/// The lease statement (public for the test that checks its plan uses the due index).
pub const LEASE_SQL: &str = include_str!("lease.sql");

/// A message leased for delivery, with what rendering and delivery need.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct LeasedMessage {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub user_id: Uuid,
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Jsonb)]
    pub payload: serde_json::Value,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    /// This attempt's number (1 for the first): the lease's fencing token.
    #[diesel(sql_type = Int4)]
    pub attempts: i32,
    #[diesel(sql_type = Text)]
    pub username: String,
    /// Empty when the user has none.
    #[diesel(sql_type = Text)]
    pub email: String,
    /// False when the recipient switched this kind off.
    #[diesel(sql_type = Bool)]
    pub enabled: bool,
    #[diesel(sql_type = Nullable<Text>)]
    pub workspace_name: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub preset_name: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub template_name: Option<String>,
    /// Methods that delivered this message on an earlier attempt: a retry skips them.
    #[diesel(sql_type = Array<Text>)]
    pub sent_methods: Vec<String>,
    /// Methods that failed this message for good on an earlier attempt.
    #[diesel(sql_type = Array<Text>)]
    pub failed_methods: Vec<String>,
}

/// Leases up to `limit` due messages to `dispatcher` for `ttl` (on the database's clock).
pub async fn lease(
    pool: &DbPool,
    dispatcher: &str,
    ttl: Duration,
    limit: i64,
) -> Result<Vec<LeasedMessage>, StoreError> {
    let mut conn = pool.get().await?;
    let rows = diesel::sql_query(LEASE_SQL)
        .bind::<Text, _>(dispatcher) // $1 dispatcher
        .bind::<Double, _>(ttl.as_secs_f64()) // $2 lease seconds
        .bind::<diesel::sql_types::BigInt, _>(limit) // $3 batch size
        .load(&mut conn)
        .await?;
    Ok(rows)
}

/// One send by one method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub method: DeliveryMethod,
    pub at: DateTime<Utc>,
    pub outcome: AttemptOutcome,
    pub error: Option<String>,
}

/// What an attempt on a message came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub id: Uuid,
    /// The leased attempt's number.
    pub attempt: i32,
    pub status: DeliveryStatus,
    /// For a temporary failure: when the message is due again, from now.
    pub retry_in: Option<Duration>,
    pub attempts: Vec<AttemptRecord>,
}

/// Records `outcome` of `dispatcher`'s lease. The sends are facts and are always recorded;
/// the message's state changes only while the lease is still this dispatcher's (same holder,
/// same attempt): a dispatcher whose lease ran out and was taken over writes no state.
/// Returns whether the lease was still held.
pub async fn record(
    pool: &DbPool,
    dispatcher: &str,
    outcome: &Outcome,
) -> Result<bool, StoreError> {
    let mut conn = pool.get().await?;
    let dispatcher = dispatcher.to_owned();
    let outcome = outcome.clone();
    let held = conn
        .transaction(async move |conn| {
            let rows: Vec<_> = outcome
                .attempts
                .iter()
                .map(|a| {
                    (
                        notification_attempts::notification_id.eq(outcome.id),
                        notification_attempts::attempt.eq(outcome.attempt),
                        notification_attempts::method.eq(a.method),
                        notification_attempts::at.eq(a.at),
                        notification_attempts::outcome.eq(a.outcome),
                        notification_attempts::error.eq(a.error.as_deref()),
                    )
                })
                .collect();
            if !rows.is_empty() {
                diesel::insert_into(notification_attempts::table)
                    .values(rows)
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?;
            }
            let retry_secs = outcome.retry_in.unwrap_or_default().as_secs_f64();
            let sent = outcome.status == DeliveryStatus::Sent;
            let updated = diesel::sql_query(
                "UPDATE notifications
                 SET status = $1,
                     next_attempt_at = now() + make_interval(secs => $2),
                     sent_at = CASE WHEN $3 THEN now() ELSE sent_at END,
                     leased_by = NULL,
                     lease_expires_at = NULL
                 WHERE id = $4 AND leased_by = $5 AND attempts = $6",
            )
            .bind::<Text, _>(outcome.status) // $1 status
            .bind::<Double, _>(retry_secs) // $2 seconds until due again
            .bind::<Bool, _>(sent) // $3 delivered
            .bind::<SqlUuid, _>(outcome.id) // $4 message
            .bind::<Text, _>(&dispatcher) // $5 lease holder
            .bind::<Int4, _>(outcome.attempt) // $6 lease's attempt
            .execute(conn)
            .await?;
            Ok::<_, diesel::result::Error>(updated == 1)
        })
        .await?;
    Ok(held)
}

/// Deletes finished messages (sent, failed for good, inhibited) created before `before`,
/// `batch` at a time so that no statement holds many row locks, at most `max_batches`
/// times. Returns how many were deleted.
pub async fn prune(
    pool: &DbPool,
    before: DateTime<Utc>,
    batch: i64,
    max_batches: u32,
) -> Result<u64, StoreError> {
    let mut conn = pool.get().await?;
    let mut deleted = 0u64;
    for _ in 0..max_batches {
        let n = diesel::sql_query(
            "DELETE FROM notifications WHERE id IN (
                 SELECT id FROM notifications
                 WHERE status IN ('sent', 'permanent_failure', 'inhibited') AND created_at < $1
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED)",
        )
        .bind::<Timestamptz, _>(before) // $1 cutoff
        .bind::<diesel::sql_types::BigInt, _>(batch) // $2 batch size
        .execute(&mut conn)
        .await?;
        deleted += n as u64;
        if (n as i64) < batch {
            break;
        }
    }
    Ok(deleted)
}

/// Messages still to be delivered (pending or to be retried).
pub async fn pending_count(pool: &DbPool) -> Result<i64, StoreError> {
    let mut conn = pool.get().await?;
    let count = notifications::table
        .filter(
            notifications::status
                .eq_any([DeliveryStatus::Pending, DeliveryStatus::TemporaryFailure]),
        )
        .count()
        .get_result(&mut conn)
        .await?;
    Ok(count)
}

/// A recorded attempt, as `notifications list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = notification_attempts, check_for_backend(diesel::pg::Pg))]
pub struct Attempt {
    pub notification_id: Uuid,
    pub attempt: i32,
    pub method: DeliveryMethod,
    pub at: DateTime<Utc>,
    pub outcome: AttemptOutcome,
    pub error: Option<String>,
}

/// Every attempt on the messages `ids`, oldest first.
pub async fn attempts_of(pool: &DbPool, ids: &[Uuid]) -> Result<Vec<Attempt>, StoreError> {
    let mut conn = pool.get().await?;
    let rows = notification_attempts::table
        .filter(notification_attempts::notification_id.eq_any(ids))
        .order((
            notification_attempts::notification_id,
            notification_attempts::attempt,
            notification_attempts::method,
        ))
        .select(Attempt::as_select())
        .load(&mut conn)
        .await?;
    Ok(rows)
}

/// The delivery columns of one message.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = notifications, check_for_backend(diesel::pg::Pg))]
pub struct DeliveryState {
    pub id: Uuid,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub leased_by: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// The delivery state of the messages `ids`.
pub async fn delivery_states(
    pool: &DbPool,
    ids: &[Uuid],
) -> Result<Vec<DeliveryState>, StoreError> {
    let mut conn = pool.get().await?;
    let rows = notifications::table
        .filter(notifications::id.eq_any(ids))
        .select(DeliveryState::as_select())
        .load(&mut conn)
        .await?;
    Ok(rows)
}
