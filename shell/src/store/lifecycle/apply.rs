//! Applying one lifecycle decision. Each workspace gets its own short transaction that
//! takes a per-workspace advisory lock (another replica already on it → skip), re-reads
//! the row under `FOR UPDATE`, and re-decides with the core on the fresh row: the snapshot
//! may be a minute old, and a user may have stopped or started the workspace meanwhile.
//! The fence check, the lock, the re-read and all the writes are one statement each, all
//! prepared once per connection: six round trips with `BEGIN` and `COMMIT`. The re-read is
//! its own statement, after the lock, so that it sees everything committed during a wait.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use poolkeeper_core::lifecycle::{decide, tick_of, Decision};
use uuid::Uuid;

use super::load::{to_workspace, WorkspaceRow, CANDIDATE_SQL};
use crate::db::enums::{BuildReason, Transition};
use crate::db::models::{NewNotification, NewProvisionerJob, NewWorkspaceBuild};
use crate::db::schema::{audit_log, provisioner_jobs, workspace_builds, workspaces};
use crate::db::{DbPool, PREBUILDS_USER_ID};
use crate::store::leases::Fence;
use crate::store::notifications::{enqueue_statement, notification, Dedupe, Kind};
use crate::store::rows::{audit, build_rows, BuildSpec, Prepared, Writes};
use crate::store::StoreError;

/// The audit actor of this loop.
const LOOP: &str = "lifecycle";

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
    let workspace_id = decision.workspace_id;
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
    let Ok(workspace) = to_workspace(&row) else { return Ok(Applied::Skipped("unreadable")) };
    let decision = decide(&workspace, tick_of(now));
    if !decision.has_effect() {
        return Ok(Applied::Skipped("no_longer_due"));
    }
    // Only a start decided with `use_active_version` moves to the active version (rules §2);
    // a stop or delete reuses the latest build's.
    let new_version = match (decision.use_active_version, row.active_version_id) {
        (true, Some(active)) if decision.transition.is_some() => active,
        _ => row.template_version_id,
    };
    let mut writes = Writes::new();
    let job_id = match (decision.transition, decision.reason) {
        (Some(transition), Some(reason)) => {
            let (job, build) = transition_rows(now, &row, new_version, transition, reason)?;
            let job_id = job.id;
            writes.push(diesel::insert_into(provisioner_jobs::table).values(job));
            writes.push(diesel::insert_into(workspace_builds::table).values(build));
            Some(job_id)
        }
        _ => None,
    };
    push_workspace_update(&mut writes, now, &row, &decision);
    let diff = serde_json::json!({
        "transition": decision.transition.map(|t| t.as_str()),
        "reason": decision.reason.map(|r| r.as_str()),
        // The core's explanation, so that "why did this stop at 02:00?" has its answer.
        "rule": decision.rule.as_str(),
        "why": decision.why,
        "job_id": job_id,
        "old": {
            "dormant_at": workspace.dormant_at,
            "deleting_at": workspace.deleting_at,
            "next_start_at": workspace.next_start_at,
            "template_version_id": row.template_version_id,
        },
        "new": {
            "dormant_at": decision.mark_dormant.as_ref().map_or(workspace.dormant_at, |d| Some(d.dormant_at)),
            "deleting_at": decision.mark_dormant.as_ref().map_or(workspace.deleting_at, |d| d.deleting_at),
            "next_start_at": if decision.mark_dormant.is_some() { None } else { decision.next_start_at.or(workspace.next_start_at) },
            "template_version_id": new_version,
        },
    });
    if let Some(note) = owner_notification(now, &row, &decision) {
        writes.push(enqueue_statement(note));
    }
    let entry = audit(now, LOOP, "lifecycle", workspace_id, diff);
    writes.push(diesel::insert_into(audit_log::table).values(entry));
    writes.execute(conn).await?;
    Ok(Applied::Done { decision, job_id })
}

/// The build (of `template_version_id`) and job of the decision's transition.
fn transition_rows(
    now: DateTime<Utc>,
    row: &WorkspaceRow,
    template_version_id: Uuid,
    transition: poolkeeper_core::build::Transition,
    reason: poolkeeper_core::lifecycle::Reason,
) -> Result<(NewProvisionerJob, NewWorkspaceBuild), diesel::result::Error> {
    let reason: BuildReason = reason
        .as_str()
        .parse()
        .map_err(|err| diesel::result::Error::SerializationError(Box::new(err)))?;
    let transition = Transition::from(transition);
    let spec = BuildSpec {
        workspace_id: row.id,
        organization_id: row.organization_id,
        build_number: row.build_number + 1,
        template_version_id,
        preset_id: None,
        transition,
        reason,
        initiator_id: row.owner_id,
        for_prebuild: false,
        provisioner_state: row.provisioner_state.clone(),
    };
    Ok(build_rows(now, spec))
}

fn push_workspace_update(
    writes: &mut Writes<'_>,
    now: DateTime<Utc>,
    row: &WorkspaceRow,
    decision: &Decision,
) {
    let target = workspaces::table.find(row.id);
    if let Some(dormant) = &decision.mark_dormant {
        // A dormant workspace never autostarts: its next start is cleared with it.
        writes.push(diesel::update(target).set((
            workspaces::dormant_at.eq(Some(dormant.dormant_at)),
            workspaces::deleting_at.eq(dormant.deleting_at),
            workspaces::next_start_at.eq(None::<DateTime<Utc>>),
            workspaces::updated_at.eq(now),
        )));
    } else if let Some(next) = decision.next_start_at {
        writes.push(
            diesel::update(target)
                .set((workspaces::next_start_at.eq(Some(next)), workspaces::updated_at.eq(now))),
        );
    }
}

/// Outbox rows: one per workspace, kind and day, so a flapping workspace never floods its owner
/// (rules §2 "Side effects").
fn owner_notification(
    now: DateTime<Utc>,
    row: &WorkspaceRow,
    decision: &Decision,
) -> Option<NewNotification> {
    let moved = decision.use_active_version
        && decision.transition.is_some()
        && row.active_version_id.is_some_and(|v| v != row.template_version_id);
    let (kind, payload) = if let Some(dormant) = &decision.mark_dormant {
        (
            Kind::WorkspaceDormant,
            serde_json::json!({ "workspace_id": row.id, "deleting_at": dormant.deleting_at }),
        )
    } else if moved {
        (
            Kind::WorkspaceAutoupdated,
            serde_json::json!({
                "workspace_id": row.id,
                "old_template_version_id": row.template_version_id,
                "template_version_id": row.active_version_id,
            }),
        )
    } else {
        return None;
    };
    Some(notification(now, row.owner_id, kind, Dedupe::Daily(row.id), payload))
}
