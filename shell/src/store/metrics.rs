//! Read-only figures for the metrics, read once per prebuild cycle (never at scrape time):
//! per-preset prebuild totals from the build history and the audit log, and unfinished
//! provisioner jobs by status.

use std::collections::HashMap;

use diesel::sql_types::{Array, BigInt, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::StoreError;
use crate::db::enums::JobStatus;
use crate::db::PREBUILDS_USER_ID;

/// Totals of one preset's prebuilds, over all of history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PresetTotals {
    /// First builds the reconciler started for the preset.
    pub created: u64,
    /// Those whose job failed.
    pub failed: u64,
    /// Those whose workspace now belongs to a user.
    pub claimed: u64,
    /// Claim builds that re-created some of a prebuild's resources.
    pub resource_replacements: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsFigures {
    pub totals: HashMap<Uuid, PresetTotals>,
    /// Every status of an unfinished job (in the schema's order) with its count, zeros
    /// included. Finished jobs are counted per preset (`PresetTotals`), not here.
    pub jobs_by_status: Vec<(String, i64)>,
}

#[derive(diesel::QueryableByName)]
struct TotalsRow {
    #[diesel(sql_type = SqlUuid)]
    preset_id: Uuid,
    #[diesel(sql_type = BigInt)]
    created: i64,
    #[diesel(sql_type = BigInt)]
    failed: i64,
    #[diesel(sql_type = BigInt)]
    claimed: i64,
}

#[derive(diesel::QueryableByName)]
struct ReplacementsRow {
    #[diesel(sql_type = Text)]
    preset_id: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(diesel::QueryableByName)]
struct StatusRow {
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// A prebuild is a workspace whose first build the reconciler started for a preset; it was
/// claimed once a user owns it (as Coder counts them).
const TOTALS_SQL: &str = "
SELECT b.preset_id,
       count(*) AS created,
       count(*) FILTER (WHERE j.status = 'failed') AS failed,
       count(*) FILTER (WHERE w.owner_id <> $1) AS claimed
FROM workspace_builds b
JOIN workspaces w ON w.id = b.workspace_id
JOIN provisioner_jobs j ON j.id = b.job_id
WHERE b.build_number = 1 AND b.initiator_id = $1 AND b.preset_id = ANY($2)
GROUP BY b.preset_id";

/// The provisioner audits every replacement once per claim build, whoever is notified
/// (the notifications go to however many template admins there are, possibly none).
/// Preset ids are compared as text: a malformed `diff` never fails the query.
const REPLACEMENTS_SQL: &str = "
SELECT diff->>'preset_id' AS preset_id, count(DISTINCT diff->>'build_id') AS n
FROM audit_log
WHERE action = 'prebuild_resources_replaced' AND diff->>'preset_id' = ANY($1)
GROUP BY 1";

/// Jobs not finished yet, by status. Each arm matches a partial index's predicate exactly
/// (pending; running or canceling), so the refresh reads the live queue and never the
/// history of finished jobs, however long it grows.
pub const LIVE_JOBS_SQL: &str = "
SELECT status, count(*) AS n FROM provisioner_jobs WHERE status = 'pending' GROUP BY status
UNION ALL
SELECT status, count(*) AS n FROM provisioner_jobs WHERE status IN ('running', 'canceling')
GROUP BY status";

/// Reads the figures for `preset_ids` in one short read-only transaction.
pub async fn load_metrics_figures(
    conn: &mut AsyncPgConnection,
    preset_ids: &[Uuid],
) -> Result<MetricsFigures, StoreError> {
    let ids = preset_ids.to_vec();
    let id_texts: Vec<String> = preset_ids.iter().map(Uuid::to_string).collect();
    let (totals, replacements, statuses) = conn
        .build_transaction()
        .read_only()
        .run(async move |conn| {
            let totals: Vec<TotalsRow> = diesel::sql_query(TOTALS_SQL)
                .bind::<SqlUuid, _>(PREBUILDS_USER_ID)
                .bind::<Array<SqlUuid>, _>(ids)
                .load(conn)
                .await?;
            let replacements: Vec<ReplacementsRow> = diesel::sql_query(REPLACEMENTS_SQL)
                .bind::<Array<Text>, _>(id_texts)
                .load(conn)
                .await?;
            let statuses: Vec<StatusRow> = diesel::sql_query(LIVE_JOBS_SQL).load(conn).await?;
            Ok::<_, diesel::result::Error>((totals, replacements, statuses))
        })
        .await?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let mut by_preset: HashMap<Uuid, PresetTotals> = HashMap::new();
    for row in totals {
        let entry = by_preset.entry(row.preset_id).or_default();
        entry.created = count(row.created);
        entry.failed = count(row.failed);
        entry.claimed = count(row.claimed);
    }
    for row in replacements {
        // Only ids given are returned, and those parse.
        if let Ok(id) = row.preset_id.parse::<Uuid>() {
            by_preset.entry(id).or_default().resource_replacements = count(row.n);
        }
    }
    // Every live status, so a status with no jobs reads 0 rather than vanishing.
    let jobs_by_status = JobStatus::ALL
        .iter()
        .filter(|status| !status.is_finished())
        .map(|status| {
            let n = statuses.iter().filter(|row| row.status == status.as_str()).map(|r| r.n).sum();
            (status.as_str().to_owned(), n)
        })
        .collect();
    Ok(MetricsFigures { totals: by_preset, jobs_by_status })
}

/// The names of `version_ids`, for display.
pub async fn version_names(
    conn: &mut AsyncPgConnection,
    version_ids: &[Uuid],
) -> Result<HashMap<Uuid, String>, StoreError> {
    use crate::db::schema::template_versions;
    use diesel::{ExpressionMethods, QueryDsl};
    let names: Vec<(Uuid, String)> = template_versions::table
        .filter(template_versions::id.eq_any(version_ids))
        .select((template_versions::id, template_versions::name))
        .load(conn)
        .await?;
    Ok(names.into_iter().collect())
}

/// Jobs queued, jobs running, and claims ever made (the demo's progress line).
pub async fn activity_counts(conn: &mut AsyncPgConnection) -> Result<(i64, i64, i64), StoreError> {
    use crate::db::enums::BuildReason;
    use crate::db::schema::{provisioner_jobs, workspace_builds};
    use diesel::{ExpressionMethods, QueryDsl};
    let queued: i64 = provisioner_jobs::table
        .filter(provisioner_jobs::status.eq(JobStatus::Pending))
        .count()
        .get_result(conn)
        .await?;
    let running: i64 = provisioner_jobs::table
        .filter(provisioner_jobs::status.eq(JobStatus::Running))
        .count()
        .get_result(conn)
        .await?;
    let claims: i64 = workspace_builds::table
        .filter(workspace_builds::reason.eq(BuildReason::Claim))
        .count()
        .get_result(conn)
        .await?;
    Ok((queued, running, claims))
}
