//! The demo's reconciliation and lifecycle loops: the daemon's own [`PrebuildReconciler`] and
//! [`LifecycleExecutor`] (leadership, pause, per-preset isolation included), driven on a short
//! interval so the scenario plays out in seconds.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use poolkeeper_core::prebuilds::ReconcilerConfig;
use tokio_util::sync::CancellationToken;

use crate::daemon::http::HttpState;
use crate::daemon::{DaemonError, LifecycleExecutor, PrebuildReconciler};
use crate::db::DbPool;

/// The reconciler settings the demo uses: quick backoff, a small hard limit.
pub fn reconciler_config() -> ReconcilerConfig {
    ReconcilerConfig {
        backoff_interval_secs: 5,
        backoff_lookback_secs: 3600,
        failure_hard_limit: 3,
        max_pending_creates_per_preset: 0,
        failed_keep: 3,
        failed_grace_secs: 3600,
    }
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

/// One loop's engine: the daemon's reconciler or executor.
enum Engine {
    Prebuilds(Box<PrebuildReconciler>),
    Lifecycle(Box<LifecycleExecutor>),
}

impl Engine {
    async fn run_once(&mut self) -> Result<(), DaemonError> {
        match self {
            Engine::Prebuilds(reconciler) => reconciler.cycle(Utc::now()).await.map(drop),
            Engine::Lifecycle(executor) => executor.tick(Utc::now()).await.map(drop),
        }
    }
}

/// Runs `kind`'s cycle every `interval` until `shutdown`; a failed cycle is logged and
/// retried at the next interval. Readiness and metrics go to `http`, as in the daemon.
pub async fn run_loop(
    pool: DbPool,
    url: String,
    kind: LoopKind,
    interval: Duration,
    http: HttpState,
    shutdown: CancellationToken,
) {
    let metrics = Arc::clone(&http.metrics);
    let mut engine = match kind {
        LoopKind::Prebuilds => {
            let parallelism = pool.status().max_size / 2;
            let reconciler = PrebuildReconciler::new(pool, &url, reconciler_config(), parallelism);
            Engine::Prebuilds(Box::new(reconciler.with_metrics(metrics)))
        }
        LoopKind::Lifecycle => {
            Engine::Lifecycle(Box::new(LifecycleExecutor::new(pool, &url).with_metrics(metrics)))
        }
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let outcome = engine.run_once().await;
        http.set_ready(outcome.is_ok());
        if let Err(err) = outcome {
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
