//! The demo's own reconciliation and lifecycle loops: one cycle each per interval, built
//! from the store's load/apply functions and the core's pure plans (the same steps as the
//! daemon's loops, without leases, metrics or NOTIFY wake-ups).

use std::time::Duration;

use chrono::Utc;
use poolkeeper_core::prebuilds::ReconcilerConfig;
use tokio_util::sync::CancellationToken;

use crate::db::DbPool;
use crate::store::lifecycle::{apply_lifecycle_decision, load_lifecycle_snapshot};
use crate::store::prebuilds::{apply_preset_plan, load_prebuild_snapshot};
use crate::store::publish::publish_jobs;
use crate::store::settings::reconciliation_paused;
use crate::store::StoreError;

/// The reconciler settings the demo uses: quick backoff, a small hard limit.
pub fn reconciler_config() -> ReconcilerConfig {
    ReconcilerConfig {
        backoff_interval_secs: 5,
        backoff_lookback_secs: 3600,
        failure_hard_limit: 3,
        max_pending_creates_per_preset: 0,
    }
}

/// One prebuild reconciliation cycle: load the snapshot, plan every preset, apply each
/// preset's plan. A preset whose plan fails to apply is logged and the others go on.
pub async fn reconcile_once(pool: &DbPool, config: ReconcilerConfig) -> Result<(), StoreError> {
    let now = Utc::now();
    let loaded = {
        let mut conn = pool.get().await?;
        if reconciliation_paused(&mut conn).await? {
            tracing::debug!("prebuild reconciliation paused");
            return Ok(());
        }
        load_prebuild_snapshot(&mut conn, now, config).await?
    };
    let plans = poolkeeper_core::prebuilds::plan(now, &loaded.snapshot);
    for (preset, plan) in loaded.snapshot.presets.iter().zip(&plans) {
        match apply_preset_plan(pool, now, preset, plan).await {
            Ok(jobs) => publish_jobs(&jobs),
            Err(err) => tracing::warn!(
                preset_id = %preset.id,
                error = %err,
                label = err.label(),
                "cannot apply the preset's plan; retrying next cycle"
            ),
        }
    }
    Ok(())
}

/// One lifecycle tick: load the candidates, decide, apply every decision with an effect.
pub async fn lifecycle_once(pool: &DbPool) -> Result<(), StoreError> {
    let now = Utc::now();
    let snapshot = {
        let mut conn = pool.get().await?;
        load_lifecycle_snapshot(&mut conn, now).await?
    };
    for decision in poolkeeper_core::lifecycle::plan(now, &snapshot) {
        if !decision.has_effect() {
            continue;
        }
        if let Err(err) = apply_lifecycle_decision(pool, now, &decision).await {
            tracing::warn!(
                workspace_id = %decision.workspace_id,
                error = %err,
                label = err.label(),
                "cannot apply the lifecycle decision; retrying next tick"
            );
        }
    }
    Ok(())
}

/// Which loop [`run_loop`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopKind {
    Prebuilds,
    Lifecycle,
}

impl LoopKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Prebuilds => "prebuilds",
            Self::Lifecycle => "lifecycle",
        }
    }
}

/// Runs `kind`'s cycle every `interval` until `shutdown`; a failed cycle is logged and
/// retried at the next interval.
pub async fn run_loop(
    pool: DbPool,
    kind: LoopKind,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let config = reconciler_config();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let result = match kind {
            LoopKind::Prebuilds => reconcile_once(&pool, config).await,
            LoopKind::Lifecycle => lifecycle_once(&pool).await,
        };
        if let Err(err) = result {
            tracing::warn!(
                loop_name = kind.as_str(),
                error = %err,
                label = err.label(),
                "demo cycle failed; retrying"
            );
        }
    }
    tracing::debug!(loop_name = kind.as_str(), "demo loop stopped");
}
