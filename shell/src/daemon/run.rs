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
use super::supervise::supervise;
use super::{
    CycleOutcome, DaemonError, LifecycleExecutor, PrebuildReconciler, Purger, Recorder,
    RetentionSettings,
};
use crate::db::DbPool;
use crate::provisioner::ReaperConfig;

#[derive(Debug, Clone)]
pub struct DaemonSettings {
    pub database_url: String,
    pub lifecycle_interval: Duration,
    pub prebuild_interval: Duration,
    /// How often the prebuild loop reloads its kept snapshot whole (rules §8).
    pub prebuild_resync_interval: Duration,
    /// How often, between cycles, the prebuild loop's leader looks at its change feed for
    /// something unread (a claim, a job's end, an agent that became ready).
    pub prebuild_feed_poll: Duration,
    /// About how many new prebuilds one transaction of the prebuild loop creates.
    pub prebuild_create_batch: usize,
    /// Cap of the retry delay while the database is unreachable.
    pub max_retry_delay: Duration,
    pub reconciler: ReconcilerConfig,
    /// Presets (prebuild loop) and workspaces (lifecycle loop) applied at once.
    pub parallelism: usize,
    pub recorder: Option<Recorder>,
    /// Reap stale jobs at every lifecycle tick (when provisioners run alongside).
    pub reaper: Option<ReaperConfig>,
    /// The retention purge (rules §6), on the lifecycle loop's pool; `None` = never purge.
    pub retention: Option<RetentionSettings>,
}

/// The loops' connection pools. Each loop has its own, so one loop's applies (or a stuck
/// statement) can never take the connections the other loop, the API or a worker needs.
#[derive(Clone)]
pub struct DaemonPools {
    pub prebuilds: DbPool,
    pub lifecycle: DbPool,
}

impl DaemonPools {
    /// Both loops on one pool (tests and tools that run a single loop at a time).
    pub fn shared(pool: DbPool) -> Self {
        Self { prebuilds: pool.clone(), lifecycle: pool }
    }
}

/// A loop's leader lease: two intervals and ten seconds, so a healthy leader renews it at
/// least twice before it runs out, and a replica takes over from a hung one within three
/// intervals and ten seconds.
pub fn lease_for(interval: Duration) -> Duration {
    interval * 2 + Duration::from_secs(10)
}

/// Runs both loops and the preset listener, each supervised, until `shutdown`.
pub async fn run(
    settings: DaemonSettings,
    pools: impl Into<DaemonPools>,
    state: HttpState,
    shutdown: CancellationToken,
) {
    let pools = pools.into();
    state.metrics.watch_db_pool(pools.prebuilds.clone());
    let wake = Arc::new(Notify::new());
    let listener = {
        let (url, wake, shutdown) = (settings.database_url.clone(), wake.clone(), shutdown.clone());
        supervise("listener", state.clone(), shutdown.clone(), move || {
            listen_presets(url.clone(), wake.clone(), shutdown.clone())
        })
    };
    let lifecycle = {
        let (settings, pool, state2, shutdown2) =
            (settings.clone(), pools.lifecycle.clone(), state.clone(), shutdown.clone());
        supervise("lifecycle", state.clone(), shutdown.clone(), move || {
            lifecycle_loop(settings.clone(), pool.clone(), state2.clone(), shutdown2.clone())
        })
    };
    let retention = settings.retention.map(|retention| {
        let (url, pool, state2, shutdown2) = (
            settings.database_url.clone(),
            pools.lifecycle.clone(),
            state.clone(),
            shutdown.clone(),
        );
        supervise("retention", state.clone(), shutdown.clone(), move || {
            retention_loop(url.clone(), retention, pool.clone(), state2.clone(), shutdown2.clone())
        })
    });
    let prebuilds = {
        let (pool, state2, shutdown2) = (pools.prebuilds.clone(), state.clone(), shutdown.clone());
        supervise("prebuilds", state.clone(), shutdown.clone(), move || {
            prebuild_loop(
                settings.clone(),
                pool.clone(),
                state2.clone(),
                wake.clone(),
                shutdown2.clone(),
            )
        })
    };
    let tasks = [("prebuilds", prebuilds), ("lifecycle", lifecycle), ("listener", listener)];
    for (name, task) in tasks.into_iter().chain(retention.map(|task| ("retention", task))) {
        if let Err(err) = task.await {
            tracing::error!(task = name, error = %err, "supervisor ended abnormally");
        }
    }
}

impl From<DbPool> for DaemonPools {
    fn from(pool: DbPool) -> Self {
        Self::shared(pool)
    }
}

/// The shortest sleep between two cycles woken by a `next_check_at`: a cycle that ran late
/// must not spin.
const MIN_WAKE: Duration = Duration::from_millis(250);

/// How long to sleep after a cycle: the interval, or less when some plan changes earlier by
/// time alone (a backoff ends, a window opens or closes, a prebuild expires).
fn until_next_check(outcome: &CycleOutcome, interval: Duration) -> Duration {
    let CycleOutcome::Ran(stats) = outcome else { return interval };
    let Some(next) = stats.next_check_at else { return interval };
    let until = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    until.clamp(MIN_WAKE, interval.max(MIN_WAKE))
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
    .with_recorder(settings.recorder.clone())
    .with_lease_ttl(lease_for(settings.prebuild_interval))
    .with_resync_interval(settings.prebuild_resync_interval)
    .with_creates_per_transaction(settings.prebuild_create_batch);
    let mut retry = Retry::new(settings.max_retry_delay);
    while !shutdown.is_cancelled() {
        let bound = reconciler.lease_ttl();
        let outcome = tokio::time::timeout(bound, reconciler.cycle(Utc::now()))
            .await
            .unwrap_or(Err(DaemonError::CycleTimeout { loop_name: "prebuilds", after: bound }));
        if let Ok(outcome) = &outcome {
            state.metrics.set_leader("prebuilds", *outcome != CycleOutcome::NotLeader);
        }
        let delay = match outcome {
            Ok(outcome) => {
                state.set_ready(true);
                retry.succeeded();
                until_next_check(&outcome, settings.prebuild_interval)
            }
            Err(err) => {
                state.set_ready(false);
                let delay = retry.failed();
                tracing::warn!(error = %err, kind = err.label(), retry_in_ms = delay.as_millis() as u64, "prebuild cycle failed");
                delay
            }
        };
        if !until_work(&reconciler, delay, settings.prebuild_feed_poll, &wake, &shutdown).await {
            break;
        }
    }
    reconciler.release_leadership().await;
    tracing::info!("prebuild loop stopped");
}

/// Waits up to `delay` for the prebuild loop's next cycle, ending early when a preset change
/// is announced (`wake`) or when the change feed holds something unread, looked at every
/// `poll`. `false` on shutdown.
async fn until_work(
    reconciler: &PrebuildReconciler,
    delay: Duration,
    poll: Duration,
    wake: &Notify,
    shutdown: &CancellationToken,
) -> bool {
    let deadline = tokio::time::Instant::now() + delay;
    let poll = poll.max(MIN_WAKE);
    loop {
        let next_look = (tokio::time::Instant::now() + poll).min(deadline);
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return false,
            () = wake.notified() => {
                tracing::debug!("woken by a preset change");
                return true;
            }
            () = tokio::time::sleep_until(next_look) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return true;
        }
        match reconciler.has_unread_changes().await {
            Ok(true) => {
                tracing::debug!("woken by the change feed");
                return true;
            }
            Ok(false) => {}
            // The cycle at `deadline` meets the same trouble and reports it.
            Err(err) => tracing::debug!(error = %err, "cannot look at the change feed"),
        }
    }
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
        .with_recorder(settings.recorder.clone())
        .with_lease_ttl(lease_for(settings.lifecycle_interval));
    let mut retry = Retry::new(settings.max_retry_delay);
    while !shutdown.is_cancelled() {
        let now = Utc::now();
        let bound = executor.lease_ttl();
        if let Some(reaper) = &settings.reaper {
            let reaped = tokio::time::timeout(
                bound,
                crate::provisioner::reap_stale_jobs(&pool, now, reaper),
            );
            match reaped.await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => tracing::warn!(error = %err, "reaping stale jobs failed"),
                Err(_) => tracing::warn!(after = ?bound, "reaping stale jobs timed out"),
            }
        }
        let outcome = tokio::time::timeout(bound, executor.tick(now))
            .await
            .unwrap_or(Err(DaemonError::CycleTimeout { loop_name: "lifecycle", after: bound }));
        if let Ok(outcome) = &outcome {
            state.metrics.set_leader("lifecycle", outcome.is_some());
        }
        let delay = match outcome {
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
    executor.release_leadership().await;
    tracing::info!("lifecycle loop stopped");
}

/// The retention purge every `settings.interval`, on the replica holding its lease; a purge
/// is cut off when its lease would have run out (what it deleted so far stays deleted).
async fn retention_loop(
    url: String,
    settings: RetentionSettings,
    pool: DbPool,
    state: HttpState,
    shutdown: CancellationToken,
) {
    let mut purger = Purger::new(pool, &url, settings)
        .with_metrics(state.metrics.clone())
        .with_lease_ttl(lease_for(settings.interval));
    while !shutdown.is_cancelled() {
        let bound = purger.lease_ttl();
        let outcome = tokio::time::timeout(bound, purger.purge(Utc::now()))
            .await
            .unwrap_or(Err(DaemonError::CycleTimeout { loop_name: "retention", after: bound }));
        match outcome {
            Ok(led) => state.metrics.set_leader("retention", led.is_some()),
            Err(err) => {
                state.metrics.count_error("retention", err.label());
                tracing::warn!(error = %err, kind = err.label(), "retention purge failed");
            }
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(settings.interval) => {}
        }
    }
    purger.release_leadership().await;
    tracing::info!("retention loop stopped");
}
