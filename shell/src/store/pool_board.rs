//! The dashboard's pools: every preset the reconciler sees (its template's active version,
//! and older versions while they still own prebuilds), with the core's counts and its
//! explanation of the target and of any withheld create, planned with the daemon's own
//! settings; and what happened to the pool over the last hour and day.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use diesel::sql_types::{Array, BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use poolkeeper_core::prebuilds::{plan, PresetState, PresetStatus, ReconcilerConfig, Withheld};
use uuid::Uuid;

use super::prebuilds::load_prebuild_snapshot;
use super::StoreError;
use crate::db::{DbPool, PREBUILDS_USER_ID};

/// Creates, failures and claims of one preset in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolActivity {
    pub created: i64,
    pub failed: i64,
    pub claimed: i64,
}

/// One preset's row on the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolRow {
    pub preset_id: Uuid,
    pub organization: String,
    pub template: String,
    pub version: String,
    pub preset: String,
    /// Of the template's active version (else an old version's pool, draining).
    pub active_version: bool,
    pub state: PresetState,
    /// The preset's stored status, and whether the core derives the hard limit now.
    pub status: PresetStatus,
    pub hard_limited: bool,
    /// The core's explanation of `state.desired`.
    pub target: String,
    /// The core's explanation of the creates needed but not planned.
    pub withheld: Option<Withheld>,
    pub last_hour: PoolActivity,
    pub last_day: PoolActivity,
    /// The newest failed prebuild build of the last day: when, and the provisioner's error.
    pub last_failure: Option<(DateTime<Utc>, String)>,
}

#[derive(diesel::QueryableByName)]
struct ActivityRow {
    #[diesel(sql_type = SqlUuid)]
    preset_id: Uuid,
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = BigInt)]
    created_hour: i64,
    #[diesel(sql_type = BigInt)]
    created_day: i64,
    #[diesel(sql_type = BigInt)]
    failed_hour: i64,
    #[diesel(sql_type = BigInt)]
    failed_day: i64,
    #[diesel(sql_type = BigInt)]
    claimed_hour: i64,
    #[diesel(sql_type = BigInt)]
    claimed_day: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    failed_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    failure: Option<String>,
}

/// Counted as the metrics count them: a prebuild is the first build the prebuilds user made
/// for a preset ($1), it failed when its job did, and a claim is a build of reason `claim`.
/// Only builds of the last day ($3) are read; $4 starts the last hour.
const ACTIVITY_SQL: &str = "
WITH recent AS (
    SELECT b.preset_id, b.created_at, b.reason, b.initiator_id, b.build_number,
           j.status, j.completed_at, j.error
    FROM workspace_builds b
    JOIN provisioner_jobs j ON j.id = b.job_id
    WHERE b.preset_id = ANY($2) AND b.created_at >= $3
),
made AS (SELECT * FROM recent WHERE initiator_id = $1 AND build_number = 1)
SELECT p.id AS preset_id, v.name AS version,
       (SELECT count(*) FROM made m WHERE m.preset_id = p.id AND m.created_at >= $4) AS created_hour,
       (SELECT count(*) FROM made m WHERE m.preset_id = p.id) AS created_day,
       (SELECT count(*) FROM made m WHERE m.preset_id = p.id AND m.status = 'failed'
                                      AND m.completed_at >= $4) AS failed_hour,
       (SELECT count(*) FROM made m WHERE m.preset_id = p.id AND m.status = 'failed') AS failed_day,
       (SELECT count(*) FROM recent r WHERE r.preset_id = p.id AND r.reason = 'claim'
                                        AND r.created_at >= $4) AS claimed_hour,
       (SELECT count(*) FROM recent r WHERE r.preset_id = p.id AND r.reason = 'claim') AS claimed_day,
       f.completed_at AS failed_at, f.error AS failure
FROM presets p
JOIN template_versions v ON v.id = p.template_version_id
LEFT JOIN LATERAL (SELECT m.completed_at, COALESCE(m.error, 'no error recorded') AS error
                   FROM made m WHERE m.preset_id = p.id AND m.status = 'failed'
                   ORDER BY m.completed_at DESC NULLS LAST LIMIT 1) f ON true
WHERE p.id = ANY($2)";

/// The pools as the reconciler with `config` sees them at `now`, in its order (organization,
/// template, preset).
pub async fn pool_board(
    pool: &DbPool,
    now: DateTime<Utc>,
    config: ReconcilerConfig,
) -> Result<Vec<PoolRow>, StoreError> {
    let mut conn = pool.get().await?;
    let loaded = load_prebuild_snapshot(&mut conn, now, config).await?;
    let plans = plan(now, &loaded.snapshot);
    let ids: Vec<Uuid> = loaded.snapshot.presets.iter().map(|p| p.id).collect();
    let activity: Vec<ActivityRow> = diesel::sql_query(ACTIVITY_SQL)
        .bind::<SqlUuid, _>(PREBUILDS_USER_ID)
        .bind::<Array<SqlUuid>, _>(&ids)
        .bind::<Timestamptz, _>(now - TimeDelta::days(1))
        .bind::<Timestamptz, _>(now - TimeDelta::hours(1))
        .load(&mut conn)
        .await?;
    let mut activity: HashMap<Uuid, ActivityRow> =
        activity.into_iter().map(|row| (row.preset_id, row)).collect();
    let rows = loaded
        .snapshot
        .presets
        .iter()
        .zip(plans)
        .map(|(preset, preset_plan)| {
            let names = loaded.names.get(&preset.id);
            let name = |pick: fn(&super::prebuilds::PresetNames) -> &String| {
                names.map(pick).cloned().unwrap_or_default()
            };
            let seen = activity.remove(&preset.id);
            let window = |pick: fn(&ActivityRow) -> (i64, i64, i64)| {
                seen.as_ref().map(pick).map_or_else(PoolActivity::default, |(c, f, k)| {
                    PoolActivity { created: c, failed: f, claimed: k }
                })
            };
            PoolRow {
                preset_id: preset.id,
                organization: name(|n| &n.organization),
                template: name(|n| &n.template),
                version: seen.as_ref().map(|row| row.version.clone()).unwrap_or_default(),
                preset: preset.name.clone(),
                active_version: preset.using_active_version && !preset.template_deleted,
                state: preset_plan.state,
                status: preset.status,
                hard_limited: preset_plan.hard_limited,
                target: preset_plan.target,
                withheld: preset_plan.withheld,
                last_hour: window(|r| (r.created_hour, r.failed_hour, r.claimed_hour)),
                last_day: window(|r| (r.created_day, r.failed_day, r.claimed_day)),
                last_failure: seen
                    .as_ref()
                    .and_then(|row| Some((row.failed_at?, row.failure.clone()?))),
            }
        })
        .collect();
    Ok(rows)
}
