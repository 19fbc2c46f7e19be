//! The pools as `GET /api/v1/prebuilds/status` shows them. The counts are the core's (the
//! plan's state over a fresh snapshot), exactly as the metrics and the demo count them, so
//! "ready" has one definition: ready agents, not expired, of the preset's version
//! (rules §4 "Claim choice").

use chrono::{DateTime, Utc};
use diesel::sql_types::{Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use poolkeeper_core::prebuilds::{plan, ReconcilerConfig};
use uuid::Uuid;

use super::prebuilds::load_prebuild_snapshot;
use super::StoreError;
use crate::db::DbPool;

/// One preset's pool.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct PresetPoolStatus {
    pub preset_id: Uuid,
    pub preset: String,
    pub template_id: Uuid,
    pub template: String,
    pub template_version_id: Uuid,
    /// The preset's base count (`null`: no pool).
    pub desired_instances: Option<i32>,
    /// What the pool wants now: the base count, or the count of the schedule window in force.
    pub desired: u32,
    pub prebuild_status: String,
    pub last_error: Option<String>,
    pub invalidated_at: Option<DateTime<Utc>>,
    /// Prebuilds running or with a build in flight.
    pub instances: u32,
    /// Running prebuilds a claim can take now (same as `eligible`).
    pub ready: u32,
    pub eligible: u32,
    /// Running prebuilds past the preset's expiration TTL or invalidation.
    pub expired: u32,
    pub running: u32,
    pub starting: u32,
    pub deleting: u32,
}

#[derive(diesel::QueryableByName)]
struct PresetRow {
    #[diesel(sql_type = SqlUuid)]
    preset_id: Uuid,
    #[diesel(sql_type = Text)]
    preset: String,
    #[diesel(sql_type = SqlUuid)]
    template_id: Uuid,
    #[diesel(sql_type = Text)]
    template: String,
    #[diesel(sql_type = SqlUuid)]
    template_version_id: Uuid,
    #[diesel(sql_type = Nullable<Integer>)]
    desired_instances: Option<i32>,
    #[diesel(sql_type = Text)]
    prebuild_status: String,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    invalidated_at: Option<DateTime<Utc>>,
}

/// Presets of every live template's active version.
const ACTIVE_PRESETS_SQL: &str = "
SELECT p.id AS preset_id, p.name AS preset, t.id AS template_id, t.name AS template,
       p.template_version_id, p.desired_instances, p.prebuild_status, p.last_error,
       p.invalidated_at
FROM presets p
JOIN templates t ON t.active_version_id = p.template_version_id AND NOT t.deleted
ORDER BY t.name, p.name";

/// The backoff settings do not change a pool's counts, only what a cycle would do next.
const STATUS_CONFIG: ReconcilerConfig = ReconcilerConfig {
    backoff_interval_secs: 0,
    backoff_lookback_secs: 0,
    failure_hard_limit: 0,
    max_pending_creates_per_preset: 0,
    failed_keep: 0,
    failed_grace_secs: 0,
};

/// The pools of the presets of every live template's active version, counted at `now`.
pub async fn pool_status(
    pool: &DbPool,
    now: DateTime<Utc>,
) -> Result<Vec<PresetPoolStatus>, StoreError> {
    let mut conn = pool.get().await?;
    let rows: Vec<PresetRow> = diesel::sql_query(ACTIVE_PRESETS_SQL).load(&mut conn).await?;
    let loaded = load_prebuild_snapshot(&mut conn, now, STATUS_CONFIG).await?;
    let plans = plan(now, &loaded.snapshot);
    let states: std::collections::HashMap<Uuid, _> =
        loaded.snapshot.presets.iter().zip(&plans).map(|(p, plan)| (p.id, plan.state)).collect();
    Ok(rows
        .into_iter()
        .map(|row| {
            // A preset without a pool (or skipped as unreadable) counts nothing.
            let state = states.get(&row.preset_id).copied().unwrap_or_default();
            PresetPoolStatus {
                preset_id: row.preset_id,
                preset: row.preset,
                template_id: row.template_id,
                template: row.template,
                template_version_id: row.template_version_id,
                desired_instances: row.desired_instances,
                desired: state.desired,
                prebuild_status: row.prebuild_status,
                last_error: row.last_error,
                invalidated_at: row.invalidated_at,
                instances: state.actual + state.starting + state.stopping + state.deleting,
                ready: state.eligible,
                eligible: state.eligible,
                expired: state.expired,
                running: state.actual,
                starting: state.starting,
                deleting: state.deleting + state.stopping,
            }
        })
        .collect())
}
