//! The two loops. Shutdown is checked only between cycles, so a cycle in progress
//! finishes its current writes; a database error marks the daemon unready and retries
//! with capped exponential backoff instead of exiting.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use poolkeeper_core::prebuilds::ReconcilerConfig;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::http::HttpState;
use super::listen::listen_presets;
use super::{LifecycleExecutor, PrebuildReconciler, Recorder};
use crate::db::DbPool;
use crate::provisioner::ReaperConfig;

#[derive(Debug, Clone)]
pub struct DaemonSettings {
    pub database_url: String,
    pub lifecycle_interval: Duration,
    pub prebuild_interval: Duration,
    /// Cap of the retry delay while the database is unreachable.
    pub max_retry_delay: Duration,
    pub reconciler: ReconcilerConfig,
    /// Presets (prebuild loop) and workspaces (lifecycle loop) applied at once.
    pub parallelism: usize,
    pub recorder: Option<Recorder>,
    /// Reap stale jobs at every lifecycle tick (when provisioners run alongside).
    pub reaper: Option<ReaperConfig>,
}

/// Runs both loops until `shutdown`.
pub async fn run(
    settings: DaemonSettings,
    pool: DbPool,
    state: HttpState,
    shutdown: CancellationToken,
) {
    state.metrics.watch_db_pool(pool.clone());
    let wake = Arc::new(Notify::new());
    let listener =
        tokio::spawn(listen_presets(settings.database_url.clone(), wake.clone(), shutdown.clone()));
    let lifecycle = tokio::spawn(lifecycle_loop(
        settings.clone(),
        pool.clone(),
        state.clone(),
        shutdown.clone(),
    ));
    prebuild_loop(settings, pool, state, wake, shutdown).await;
    let _ = lifecycle.await;
    let _ = listener.await;
}

struct Retry {
    delay: Duration,
    max: Duration,
}

impl Retry {
    fn new(max: Duration) -> Self {
        Self { delay: Duration::from_secs(1).min(max), max }
    }

    fn failed(&mut self) -> Duration {
        let delay = self.delay;
        self.delay = (self.delay * 2).min(self.max);
        delay
    }

    fn succeeded(&mut self) {
        self.delay = Duration::from_secs(1).min(self.max);
    }
}

async fn prebuild_loop(
    settings: DaemonSettings,
    pool: DbPool,
    state: HttpState,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut reconciler = PrebuildReconciler::new(
        pool,
        &settings.database_url,
        settings.reconciler,
        settings.parallelism,
    )
    .with_metrics(state.metrics.clone())
    .with_recorder(settings.recorder.clone());
    let mut retry = Retry::new(settings.max_retry_delay);
    while !shutdown.is_cancelled() {
        let delay = match reconciler.cycle(Utc::now()).await {
            Ok(_) => {
                state.set_ready(true);
                retry.succeeded();
                settings.prebuild_interval
            }
            Err(err) => {
                state.set_ready(false);
                let delay = retry.failed();
                tracing::warn!(error = %err, kind = err.label(), retry_in_ms = delay.as_millis() as u64, "prebuild cycle failed");
                delay
            }
        };
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
            () = wake.notified() => tracing::debug!("woken by a preset change"),
        }
    }
    tracing::info!("prebuild loop stopped");
}

async fn lifecycle_loop(
    settings: DaemonSettings,
    pool: DbPool,
    state: HttpState,
    shutdown: CancellationToken,
) {
    let mut executor = LifecycleExecutor::new(pool.clone(), &settings.database_url)
        .with_parallelism(settings.parallelism)
        .with_metrics(state.metrics.clone())
        .with_recorder(settings.recorder.clone());
    let mut retry = Retry::new(settings.max_retry_delay);
    while !shutdown.is_cancelled() {
        let now = Utc::now();
        if let Some(reaper) = &settings.reaper {
            if let Err(err) = crate::provisioner::reap_stale_jobs(&pool, now, reaper).await {
                tracing::warn!(error = %err, "reaping stale jobs failed");
            }
        }
        let delay = match executor.tick(now).await {
            Ok(_) => {
                state.set_ready(true);
                retry.succeeded();
                settings.lifecycle_interval
            }
            Err(err) => {
                state.set_ready(false);
                let delay = retry.failed();
                tracing::warn!(error = %err, kind = err.label(), retry_in_ms = delay.as_millis() as u64, "lifecycle tick failed");
                delay
            }
        };
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    tracing::info!("lifecycle loop stopped");
}
