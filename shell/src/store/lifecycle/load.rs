//! Loading the lifecycle snapshot: every live, non-prebuild workspace with its owner's
//! status, its latest build and job, and its template's options, in one query inside a
//! REPEATABLE READ, READ ONLY transaction. An unreadable row is skipped with a warning.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Bool, Int4, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use poolkeeper_core::lifecycle::{LatestBuild, LifecycleSnapshot, Template, Workspace};
use uuid::Uuid;

use crate::db::PREBUILDS_USER_ID;
use crate::store::StoreError;

/// One workspace row; the fields past the snapshot's are what the applier writes with.
#[derive(diesel::QueryableByName)]
pub(super) struct WorkspaceRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub owner_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub organization_id: Uuid,
    #[diesel(sql_type = Text)]
    owner_status: String,
    #[diesel(sql_type = Nullable<Text>)]
    autostart_schedule: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    next_start_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Timestamptz)]
    last_used_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    dormant_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    deleting_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Text)]
    automatic_updates: String,
    #[diesel(sql_type = Int4)]
    pub build_number: i32,
    #[diesel(sql_type = Nullable<diesel::sql_types::Binary>)]
    pub provisioner_state: Option<Vec<u8>>,
    #[diesel(sql_type = Text)]
    transition: String,
    #[diesel(sql_type = SqlUuid)]
    pub template_version_id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    build_created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    deadline: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    max_deadline: Option<DateTime<Utc>>,
    #[diesel(sql_type = Text)]
    job_status: String,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    job_completed_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub active_version_id: Option<Uuid>,
    #[diesel(sql_type = Bool)]
    require_active_version: bool,
    #[diesel(sql_type = Bool)]
    user_autostart_enabled: bool,
    #[diesel(sql_type = Bool)]
    user_autostop_enabled: bool,
    #[diesel(sql_type = Array<Text>)]
    autostart_days: Vec<String>,
    #[diesel(sql_type = BigInt)]
    failure_ttl_secs: i64,
    #[diesel(sql_type = BigInt)]
    time_til_dormant_secs: i64,
    #[diesel(sql_type = BigInt)]
    time_til_dormant_autodelete_secs: i64,
}

/// Every lifecycle candidate (a person's live workspace) with its latest build and job,
/// without the build's provisioner state: the snapshot never uses it, and a Terraform state
/// is often megabytes, read every tick for every workspace. The applier's reads below carry
/// it, for the build they write. Unordered: the rows are sorted by id here, which lets the
/// server scan the table instead of walking its primary key (a third less time at 100,000).
static CANDIDATES_SQL: LazyLock<String> = LazyLock::new(|| {
    let sql = include_str!("../sql/lifecycle_candidates.sql");
    without_provisioner_state(sql)
});

/// One candidate by id ($2) as the snapshot reads it, for explaining a single workspace.
static EXPLAINED_SQL: LazyLock<String> = LazyLock::new(|| without_provisioner_state(CANDIDATE_SQL));

fn without_provisioner_state(sql: &str) -> String {
    sql.replacen("lb.provisioner_state,", "NULL::bytea AS provisioner_state,", 1)
}

/// One candidate by id ($2), for the applier's read after its lock: the same statement as
/// the snapshot's, so the row an applier re-decides on is read exactly as the tick read it.
pub(super) const CANDIDATE_SQL: &str =
    concat!(include_str!("../sql/lifecycle_candidates.sql"), "\n  AND w.id = $2");

/// The candidates among the ids in $2, for a batch's read after its lock.
pub(super) const CANDIDATES_BY_ID_SQL: &str =
    concat!(include_str!("../sql/lifecycle_candidates.sql"), "\n  AND w.id = ANY($2)");

/// Loads the lifecycle candidates. Prebuilds are left out: they get no decision (rules §2).
pub async fn load_lifecycle_snapshot(
    conn: &mut AsyncPgConnection,
    _now: DateTime<Utc>,
) -> Result<LifecycleSnapshot, StoreError> {
    let mut rows: Vec<WorkspaceRow> = conn
        .build_transaction()
        .repeatable_read()
        .read_only()
        .run(async |conn| {
            diesel::sql_query(CANDIDATES_SQL.as_str())
                .bind::<SqlUuid, _>(PREBUILDS_USER_ID)
                .load(conn)
                .await
        })
        .await?;
    // The order PostgreSQL's `ORDER BY id` gives (uuids compare as bytes).
    rows.sort_unstable_by_key(|row| row.id);
    let workspaces = rows
        .iter()
        .filter_map(|row| match to_workspace(row) {
            Ok(ws) => Some(ws),
            Err(why) => {
                tracing::warn!(workspace_id = %row.id, why, "workspace skipped this tick: unreadable row");
                None
            }
        })
        .collect();
    Ok(LifecycleSnapshot { workspaces })
}

/// One candidate as the tick would see it (`None`: not a candidate, or an unreadable row), for
/// explaining a single workspace.
pub async fn load_lifecycle_candidate(
    conn: &mut AsyncPgConnection,
    workspace_id: Uuid,
) -> Result<Option<Workspace>, StoreError> {
    let row: Option<WorkspaceRow> = diesel::sql_query(EXPLAINED_SQL.as_str())
        .bind::<SqlUuid, _>(PREBUILDS_USER_ID)
        .bind::<SqlUuid, _>(workspace_id)
        .load(conn)
        .await?
        .pop();
    Ok(row.and_then(|row| to_workspace(&row).ok()))
}

fn secs(value: i64, field: &'static str) -> Result<u64, &'static str> {
    u64::try_from(value).map_err(|_| field)
}

pub(super) fn to_workspace(row: &WorkspaceRow) -> Result<Workspace, &'static str> {
    let autostart_days = row
        .autostart_days
        .iter()
        .map(|day| day.parse().map_err(|_| "unknown autostart day"))
        .collect::<Result<_, _>>()?;
    Ok(Workspace {
        id: row.id,
        owner_status: parse_enum(&row.owner_status).ok_or("unknown owner status")?,
        is_prebuild: false,
        autostart_schedule: row.autostart_schedule.clone().filter(|s| !s.is_empty()),
        next_start_at: row.next_start_at,
        last_used_at: row.last_used_at,
        dormant_at: row.dormant_at,
        deleting_at: row.deleting_at,
        automatic_updates: parse_enum(&row.automatic_updates).ok_or("unknown automatic_updates")?,
        latest_build: LatestBuild {
            transition: row.transition.parse().map_err(|_| "unknown transition")?,
            template_version_id: row.template_version_id,
            created_at: row.build_created_at,
            deadline: row.deadline,
            max_deadline: row.max_deadline,
            job_status: row.job_status.parse().map_err(|_| "unknown job status")?,
            job_completed_at: row.job_completed_at,
        },
        template: Template {
            active_version_id: row.active_version_id.ok_or("template has no active version")?,
            require_active_version: row.require_active_version,
            user_autostart_enabled: row.user_autostart_enabled,
            user_autostop_enabled: row.user_autostop_enabled,
            autostart_days,
            failure_ttl_secs: secs(row.failure_ttl_secs, "negative failure_ttl_secs")?,
            time_til_dormant_secs: secs(
                row.time_til_dormant_secs,
                "negative time_til_dormant_secs",
            )?,
            time_til_dormant_autodelete_secs: secs(
                row.time_til_dormant_autodelete_secs,
                "negative time_til_dormant_autodelete_secs",
            )?,
        },
    })
}

/// The core's lowercase enums read through serde, so the strings stay defined in one place.
fn parse_enum<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_appliers_reads_carry_the_provisioner_state() {
        for sql in [CANDIDATES_SQL.as_str(), EXPLAINED_SQL.as_str()] {
            assert!(sql.contains("NULL::bytea AS provisioner_state"), "{sql}");
            assert!(!sql.contains("lb.provisioner_state"), "{sql}");
        }
        for sql in [CANDIDATE_SQL, CANDIDATES_BY_ID_SQL] {
            assert!(sql.contains("lb.provisioner_state,"), "{sql}");
        }
    }
}
