//! Applying lifecycle decisions, in batches and one at a time.
//!
//! A batch is one short transaction: fence check, lock the batch's workspace rows with
//! `FOR UPDATE SKIP LOCKED` (a row someone else holds is left out, never waited for), read
//! the locked candidates afresh, re-decide each with the core (the snapshot may be a minute
//! old, and a person may have stopped or started the workspace meanwhile), and write every
//! row the decisions need in one statement. The workspaces it left out are then applied one
//! at a time: each takes a per-workspace advisory lock (another replica already on it →
//! skip), waits for the row under `FOR UPDATE`, and re-decides the same way.
//!
//! In both, the re-read is its own statement after the lock, so that it sees everything
//! committed during a wait.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use poolkeeper_core::lifecycle::Decision;
use uuid::Uuid;

use super::load::{WorkspaceRow, CANDIDATES_BY_ID_SQL, CANDIDATE_SQL};
use super::write::{redecide, write_decided, Statement};
use crate::db::{DbPool, PREBUILDS_USER_ID};
use crate::store::leases::Fence;
use crate::store::rows::Prepared;
use crate::store::StoreError;

/// The unique index on (workspace, build number).
const BUILD_NUMBER_KEY: &str = "workspace_builds_workspace_id_build_number_key";

/// What happened to one decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Nothing written; the reason is a short stable label.
    Skipped(&'static str),
    /// The decision re-made on the fresh row was written; `job_id` when it had a transition.
    Done { decision: Decision, job_id: Option<Uuid> },
}

/// The advisory try-lock, then (only if it was taken) the workspace row under `FOR UPDATE`.
/// `FOR UPDATE` locks only the rows that pass the subquery's filter, which includes the
/// try-lock's result, so a workspace another replica is on is never waited for. The row is
/// only locked here; it is read by the next statement (see [`CANDIDATE_SQL`]).
const LOCK_SQL: &str = "
WITH advisory AS MATERIALIZED (SELECT pg_try_advisory_xact_lock($2) AS locked)
SELECT advisory.locked, w.id AS workspace_id FROM advisory
LEFT JOIN LATERAL (SELECT id FROM workspaces WHERE id = $1 AND NOT deleted AND advisory.locked
                   FOR UPDATE) w ON true";

/// The candidate row is read after the lock, by its own statement ([`CANDIDATE_SQL`]): under
/// READ COMMITTED each statement sees what was committed before it started, whereas a
/// locking statement that waited re-reads only the locked row itself, so a build, job or
/// deadline joined to it would be the one from before the wait (an activity bump committed
/// meanwhile would be missed).
#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
    /// `None` when not locked, or when the workspace is gone.
    #[diesel(sql_type = diesel::sql_types::Nullable<SqlUuid>)]
    workspace_id: Option<Uuid>,
}

/// The per-workspace advisory lock key (transaction-scoped, released at commit).
fn lock_key(workspace_id: Uuid) -> i64 {
    let (high, low) = workspace_id.as_u64_pair();
    i64::from_ne_bytes((high ^ low).to_ne_bytes())
}

/// Applies `decision` (made from a snapshot at `now`) to its workspace.
pub async fn apply_lifecycle_decision(
    pool: &DbPool,
    fence: &Fence,
    now: DateTime<Utc>,
    decision: &Decision,
) -> Result<Applied, StoreError> {
    if !decision.has_effect() {
        return Ok(Applied::Skipped("no_effect"));
    }
    apply_lifecycle_workspace(pool, fence, now, decision.workspace_id).await
}

/// Decides `workspace_id` afresh at `now` and applies what it decides, alone: waits for its
/// row if someone holds it (up to the connection's lock timeout).
pub async fn apply_lifecycle_workspace(
    pool: &DbPool,
    fence: &Fence,
    now: DateTime<Utc>,
    workspace_id: Uuid,
) -> Result<Applied, StoreError> {
    let mut conn = pool.get().await?;
    let applied = conn
        .transaction(async |conn| {
            fence.check(conn).await?;
            Ok::<_, StoreError>(apply_locked(conn, now, workspace_id).await?)
        })
        .await;
    let applied = match applied {
        // A build numbered after the one re-read was committed by a writer that does not
        // lock the workspace: the decision is stale, not failed.
        Err(StoreError::Query(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            info,
        ))) if info.constraint_name() == Some(BUILD_NUMBER_KEY) => Applied::Skipped("raced"),
        other => other?,
    };
    match &applied {
        Applied::Skipped(why) => tracing::info!(%workspace_id, why, "lifecycle decision skipped"),
        Applied::Done { decision, job_id } => tracing::info!(
            %workspace_id,
            transition = decision.transition.map(|t| t.as_str()),
            reason = decision.reason.map(|r| r.as_str()),
            job_id = job_id.map(|id| id.to_string()),
            "lifecycle decision applied"
        ),
    }
    Ok(applied)
}

async fn apply_locked(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    workspace_id: Uuid,
) -> Result<Applied, diesel::result::Error> {
    let locked: Locked = Prepared::new(
        diesel::sql_query(LOCK_SQL)
            .bind::<SqlUuid, _>(workspace_id)
            .bind::<BigInt, _>(lock_key(workspace_id)),
    )
    .get_result(conn)
    .await?;
    if !locked.locked {
        return Ok(Applied::Skipped("locked"));
    }
    if locked.workspace_id.is_none() {
        return Ok(Applied::Skipped("gone"));
    }
    let row: Option<WorkspaceRow> = Prepared::new(
        diesel::sql_query(CANDIDATE_SQL)
            .bind::<SqlUuid, _>(PREBUILDS_USER_ID)
            .bind::<SqlUuid, _>(workspace_id),
    )
    .get_result(conn)
    .await
    .optional()?;
    // No longer a candidate (e.g. handed to the prebuilds user): nothing to decide.
    let Some(row) = row else { return Ok(Applied::Skipped("gone")) };
    let decided = match redecide(now, row) {
        Ok(decided) => decided,
        Err(why) => return Ok(Applied::Skipped(why)),
    };
    let mut applied = write_decided(conn, now, vec![decided], Statement::Kept).await?;
    Ok(applied.pop().map_or(Applied::Skipped("gone"), |(_, applied)| applied))
}

/// What one batch did.
#[derive(Debug, Default)]
pub struct BatchApplied {
    /// The workspaces the batch locked, and what became of each.
    pub outcomes: Vec<(Uuid, Applied)>,
    /// The workspaces it did not lock (someone else held the row, or it is gone): apply
    /// them one at a time ([`apply_lifecycle_workspace`]).
    pub left_out: Vec<Uuid>,
}

/// The batch's rows that nobody else holds, locked (their ids; the others are skipped, not
/// waited for). Only locked here, read by the next statement (see [`Locked`]).
const LOCK_BATCH_SQL: &str = "
SELECT id FROM workspaces WHERE id = ANY($1) AND NOT deleted ORDER BY id FOR UPDATE SKIP LOCKED";

#[derive(diesel::QueryableByName)]
struct LockedId {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
}

/// Decides the workspaces `workspace_ids` afresh at `now` and applies what they decide, in
/// one transaction: the fence, the lock, the read and the writes are four statements
/// whatever the batch's size. Its jobs are to be published once this returns (committed).
pub async fn apply_lifecycle_batch(
    pool: &DbPool,
    fence: &Fence,
    now: DateTime<Utc>,
    workspace_ids: &[Uuid],
) -> Result<BatchApplied, StoreError> {
    if workspace_ids.is_empty() {
        return Ok(BatchApplied::default());
    }
    let mut conn = pool.get().await?;
    let batch = conn
        .transaction(async |conn| {
            fence.check(conn).await?;
            Ok::<_, StoreError>(apply_batch_locked(conn, now, workspace_ids).await?)
        })
        .await?;
    tracing::info!(
        workspaces = workspace_ids.len(),
        applied = batch.outcomes.iter().filter(|(_, a)| matches!(a, Applied::Done { .. })).count(),
        left_out = batch.left_out.len(),
        "lifecycle batch committed"
    );
    Ok(batch)
}

async fn apply_batch_locked(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    workspace_ids: &[Uuid],
) -> Result<BatchApplied, diesel::result::Error> {
    let locked: Vec<LockedId> =
        Prepared::new(diesel::sql_query(LOCK_BATCH_SQL).bind::<Array<SqlUuid>, _>(workspace_ids))
            .load(conn)
            .await?;
    let locked: std::collections::HashSet<Uuid> = locked.into_iter().map(|l| l.id).collect();
    let left_out = workspace_ids.iter().copied().filter(|id| !locked.contains(id)).collect();
    let locked_ids: Vec<Uuid> = locked.iter().copied().collect();
    let rows: Vec<WorkspaceRow> = Prepared::new(
        diesel::sql_query(CANDIDATES_BY_ID_SQL)
            .bind::<SqlUuid, _>(PREBUILDS_USER_ID)
            .bind::<Array<SqlUuid>, _>(&locked_ids),
    )
    .load(conn)
    .await?;
    let mut outcomes = Vec::with_capacity(locked_ids.len());
    let mut decided = Vec::with_capacity(rows.len());
    let mut read = std::collections::HashSet::with_capacity(rows.len());
    for row in rows {
        read.insert(row.id);
        let id = row.id;
        match redecide(now, row) {
            Ok(one) => decided.push(one),
            Err(why) => outcomes.push((id, Applied::Skipped(why))),
        }
    }
    // Locked but no longer a candidate (e.g. handed to the prebuilds user).
    outcomes.extend(
        locked_ids.iter().filter(|id| !read.contains(id)).map(|id| (*id, Applied::Skipped("gone"))),
    );
    outcomes.extend(write_decided(conn, now, decided, Statement::OneOff).await?);
    Ok(BatchApplied { outcomes, left_out })
}
