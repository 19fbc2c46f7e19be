//! The retention purge (rules §6): deletes history in small batches, each batch its own
//! short transaction fenced by the retention lease. Which builds may go is the core's
//! decision (`poolkeeper_core::retention::purgeable_builds`); the SQL here only narrows the
//! candidates (a job finished before the cutoff, a newer build of the workspace exists),
//! which is necessary for the core's rule and cheap through the jobs' completion index.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Bool, Int4, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, RunQueryDsl};
use poolkeeper_core::build::Transition;
use poolkeeper_core::retention::{purgeable_builds, BuildHistory};
use uuid::Uuid;

use super::leases::Fence;
use super::StoreError;
use crate::db::DbPool;

/// Workspaces with a build whose job finished before the cutoff and a newer build, after a
/// cursor, in id order (served by `provisioner_jobs_completed_at_idx`).
/// Binds: $1 the cutoff, $2 the cursor (exclusive), $3 how many.
const CANDIDATES_SQL: &str = "
SELECT DISTINCT b.workspace_id
FROM provisioner_jobs j
JOIN workspace_builds b ON b.job_id = j.id
WHERE j.completed_at < $1 AND b.workspace_id > $2
  AND EXISTS (SELECT 1 FROM workspace_builds n
              WHERE n.workspace_id = b.workspace_id AND n.build_number > b.build_number)
ORDER BY b.workspace_id
LIMIT $3";

/// Every build of the candidates, for the core's rule. Binds: $1 the workspace ids.
const HISTORY_SQL: &str = "
SELECT b.id, b.workspace_id, b.job_id, b.build_number, b.transition,
       b.preset_id IS NOT NULL AS preset_named, j.completed_at,
       (j.status = 'failed' AND COALESCE(j.failure_kind, 'build') <> 'build')
           AS failed_outside_template
FROM workspace_builds b JOIN provisioner_jobs j ON j.id = b.job_id
WHERE b.workspace_id = ANY($1)
ORDER BY b.workspace_id, b.build_number";

#[derive(diesel::QueryableByName)]
struct Candidate {
    #[diesel(sql_type = SqlUuid)]
    workspace_id: Uuid,
}

#[derive(diesel::QueryableByName)]
struct HistoryRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    workspace_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    job_id: Uuid,
    #[diesel(sql_type = Int4)]
    build_number: i32,
    #[diesel(sql_type = Text)]
    transition: String,
    #[diesel(sql_type = Bool)]
    preset_named: bool,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    completed_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Bool)]
    failed_outside_template: bool,
}

#[derive(diesel::QueryableByName)]
struct Deleted {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Rows one batch deleted, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Builds, each with its job (and, by cascade, its agents).
    pub builds: u64,
    pub agents: u64,
    pub audit: u64,
}

/// One batch of builds (and their jobs and agents) of up to `batch` workspaces after
/// `cursor`. Returns what it deleted and the next cursor (`None` once past the last
/// candidate).
pub async fn purge_builds(
    pool: &DbPool,
    fence: &Fence,
    cutoff: DateTime<Utc>,
    cursor: Uuid,
    batch: u32,
) -> Result<(Purged, Option<Uuid>), StoreError> {
    let mut conn = pool.get().await?;
    let candidates: Vec<Candidate> = diesel::sql_query(CANDIDATES_SQL)
        .bind::<Timestamptz, _>(cutoff)
        .bind::<SqlUuid, _>(cursor)
        .bind::<BigInt, _>(i64::from(batch.max(1)))
        .load(&mut conn)
        .await?;
    let Some(last) = candidates.last().map(|c| c.workspace_id) else {
        return Ok((Purged::default(), None));
    };
    let ids: Vec<Uuid> = candidates.iter().map(|c| c.workspace_id).collect();
    let history: Vec<HistoryRow> =
        diesel::sql_query(HISTORY_SQL).bind::<Array<SqlUuid>, _>(ids).load(&mut conn).await?;
    let (builds, jobs) = doomed(&history, cutoff);
    if builds.is_empty() {
        return Ok((Purged::default(), Some(last)));
    }
    let purged = conn
        .transaction(async |conn| {
            fence.check(conn).await?;
            // Adding builds only makes older ones less needed, so what was decided on the
            // read above still holds; the jobs go after their builds (builds reference them).
            let agents: Deleted = diesel::sql_query(
                "WITH gone AS (DELETE FROM workspace_agents WHERE build_id = ANY($1) RETURNING 1)
                 SELECT count(*) AS n FROM gone",
            )
            .bind::<Array<SqlUuid>, _>(&builds)
            .get_result(conn)
            .await?;
            let deleted: Deleted = diesel::sql_query(
                "WITH gone AS (DELETE FROM workspace_builds WHERE id = ANY($1) RETURNING 1)
                 SELECT count(*) AS n FROM gone",
            )
            .bind::<Array<SqlUuid>, _>(&builds)
            .get_result(conn)
            .await?;
            diesel::sql_query("DELETE FROM provisioner_jobs WHERE id = ANY($1)")
                .bind::<Array<SqlUuid>, _>(&jobs)
                .execute(conn)
                .await?;
            Ok::<_, StoreError>(Purged {
                builds: u64::try_from(deleted.n).unwrap_or(0),
                agents: u64::try_from(agents.n).unwrap_or(0),
                ..Purged::default()
            })
        })
        .await?;
    Ok((purged, Some(last)))
}

/// The builds (and their jobs) the core lets go, workspace by workspace.
fn doomed(history: &[HistoryRow], cutoff: DateTime<Utc>) -> (Vec<Uuid>, Vec<Uuid>) {
    let mut builds = Vec::new();
    let mut jobs = Vec::new();
    for rows in history.chunk_by(|a, b| a.workspace_id == b.workspace_id) {
        // A row the core cannot read keeps its whole workspace's history.
        let Some(facts) = rows.iter().map(to_history).collect::<Option<Vec<BuildHistory>>>() else {
            continue;
        };
        let purge = purgeable_builds(&facts, cutoff);
        for row in rows {
            if u32::try_from(row.build_number).is_ok_and(|n| purge.contains(&n)) {
                builds.push(row.id);
                jobs.push(row.job_id);
            }
        }
    }
    (builds, jobs)
}

fn to_history(row: &HistoryRow) -> Option<BuildHistory> {
    Some(BuildHistory {
        build_number: u32::try_from(row.build_number).ok()?,
        transition: row.transition.parse::<Transition>().ok()?,
        preset_named: row.preset_named,
        finished_at: row.completed_at,
        failed_outside_template: row.failed_outside_template,
    })
}

/// One batch of audit entries older than `cutoff` (oldest first, by `audit_log_at_idx`).
pub async fn purge_audit(
    pool: &DbPool,
    fence: &Fence,
    cutoff: DateTime<Utc>,
    batch: u32,
) -> Result<u64, StoreError> {
    delete_batch(
        pool,
        fence,
        "WITH gone AS (DELETE FROM audit_log WHERE id IN (
             SELECT id FROM audit_log WHERE at < $1 ORDER BY at LIMIT $2) RETURNING 1)
         SELECT count(*) AS n FROM gone",
        cutoff,
        batch,
    )
    .await
}

async fn delete_batch(
    pool: &DbPool,
    fence: &Fence,
    sql: &'static str,
    cutoff: DateTime<Utc>,
    batch: u32,
) -> Result<u64, StoreError> {
    let mut conn = pool.get().await?;
    let deleted = conn
        .transaction(async |conn| {
            fence.check(conn).await?;
            let deleted: Deleted = diesel::sql_query(sql)
                .bind::<Timestamptz, _>(cutoff)
                .bind::<BigInt, _>(i64::from(batch.max(1)))
                .get_result(conn)
                .await?;
            Ok::<_, StoreError>(deleted.n)
        })
        .await?;
    Ok(u64::try_from(deleted).unwrap_or(0))
}
