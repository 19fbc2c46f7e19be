//! The daemon's metrics. Scrapes never touch the database: the loops update counters and
//! histograms as they go, the prebuild cycle swaps in the pool-wide state
//! ([`PoolState`]), and the connection pool's figures are read from memory at scrape time.
//! Per-preset series are labelled by names a person recognises (organization / template /
//! preset).

use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::pool_state::{PoolState, PoolStateSlot};
use crate::db::DbPool;
use crate::store::claim::ClaimBatcher;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PresetLabels {
    pub organization: String,
    pub template: String,
    pub preset: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `prebuilds` or `lifecycle`.
    pub r#loop: String,
    /// The error's stable `label()`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    /// A supervised task's name (`prebuilds`, `lifecycle`, `listener`, `http`, `worker`).
    pub task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    /// A table the retention purge deletes from (`builds`, `jobs`, `agents`, `audit_log`,
    /// `notifications`).
    pub table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoopLabels {
    /// `prebuilds` or `lifecycle`.
    pub r#loop: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub transition: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// `webhook` or `smtp`.
    pub method: String,
    /// The notification's kind (`workspace_dormant`, ...).
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationFailureLabels {
    pub method: String,
    pub kind: String,
    /// `temporary_failure` (tried again) or `permanent_failure`.
    pub outcome: String,
}

/// Seconds one send takes: a webhook answers in milliseconds, SMTP in up to seconds.
const DISPATCH_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

/// Seconds; a cycle is normally well under a second, a slow database pushes it to tens.
const CYCLE_BUCKETS: [f64; 12] =
    [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const CLAIM_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// `poolkeeper_build_info{version}`, always 1: joins a version onto any other series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pool_state: PoolStateSlot,
    db_pool: DbPoolSlot,
    claims: ClaimBatcherSlot,
    pub reconcile_seconds: Histogram,
    pub lifecycle_tick_seconds: Histogram,
    pub cycle_errors: Family<ErrorLabels, Counter>,
    pub lifecycle_transitions: Family<TransitionLabels, Counter>,
    /// Time the API spends on one claim, from request to committed claim.
    pub claim_seconds: Histogram,
    /// Supervised tasks restarted after they died (panic or unexpected exit).
    pub task_restarts: Family<TaskLabels, Counter>,
    /// 1 while this replica holds the loop's leader lease.
    pub leader: Family<LoopLabels, Gauge>,
    /// Notifications delivered, per method and kind.
    pub notifications_sent: Family<NotificationLabels, Counter>,
    /// Sends that failed, per method, kind and outcome.
    pub notifications_failed: Family<NotificationFailureLabels, Counter>,
    /// Messages still to deliver (pending or to retry), as of the dispatcher's last pass.
    pub notifications_pending: Gauge,
    /// Duration of one send by one method.
    pub notifications_dispatch_seconds: Histogram,
    /// Rows the retention purge deleted, by table.
    pub retention_purged: Family<TableLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("poolkeeper");
        let pool_state = PoolStateSlot::default();
        let db_pool = DbPoolSlot::default();
        let claims = ClaimBatcherSlot::default();
        let reconcile_seconds = Histogram::new(CYCLE_BUCKETS);
        let lifecycle_tick_seconds = Histogram::new(CYCLE_BUCKETS);
        let cycle_errors = Family::<ErrorLabels, Counter>::default();
        let lifecycle_transitions = Family::<TransitionLabels, Counter>::default();
        let claim_seconds = Histogram::new(CLAIM_BUCKETS);
        let task_restarts = Family::<TaskLabels, Counter>::default();
        let leader = Family::<LoopLabels, Gauge>::default();
        let notifications_sent = Family::<NotificationLabels, Counter>::default();
        let notifications_failed = Family::<NotificationFailureLabels, Counter>::default();
        let notifications_pending = Gauge::default();
        let notifications_dispatch_seconds = Histogram::new(DISPATCH_BUCKETS);
        registry.register(
            "notifications_sent",
            "Notifications delivered, per method and kind",
            notifications_sent.clone(),
        );
        registry.register(
            "notifications_failed",
            "Notification sends that failed, per method, kind and outcome",
            notifications_failed.clone(),
        );
        registry.register(
            "notifications_pending",
            "Notifications still to deliver (pending or to retry) at the dispatcher's last pass",
            notifications_pending.clone(),
        );
        registry.register(
            "notifications_dispatch_duration_seconds",
            "Duration of one notification send by one method",
            notifications_dispatch_seconds.clone(),
        );
        let retention_purged = Family::<TableLabels, Counter>::default();
        registry.register_collector(Box::new(pool_state.clone()));
        registry.register_collector(Box::new(db_pool.clone()));
        registry.register_collector(Box::new(claims.clone()));
        registry.register(
            "reconciliation_cycle_duration_seconds",
            "Duration of one prebuild reconciliation cycle",
            reconcile_seconds.clone(),
        );
        registry.register(
            "lifecycle_tick_duration_seconds",
            "Duration of one lifecycle tick",
            lifecycle_tick_seconds.clone(),
        );
        registry.register(
            "cycle_errors",
            "Errors met by a cycle: the cycle's own failure or one preset's or workspace's apply",
            cycle_errors.clone(),
        );
        registry.register(
            "lifecycle_transitions",
            "Lifecycle builds queued",
            lifecycle_transitions.clone(),
        );
        registry.register(
            "claim_duration_seconds",
            "Duration of one prebuild claim through the API",
            claim_seconds.clone(),
        );
        registry.register(
            "task_restarts",
            "Supervised tasks restarted after they died (a panic or an unexpected exit)",
            task_restarts.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info.get_or_create(&BuildLabels { version: crate::VERSION.to_owned() }).set(1);
        registry.register("build_info", "This build's version; always 1", build_info);
        registry.register(
            "leader",
            "1 while this replica holds the loop's leader lease, else 0",
            leader.clone(),
        );
        registry.register(
            "retention_purged_rows",
            "Rows the retention purge deleted, by table",
            retention_purged.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            pool_state,
            db_pool,
            claims,
            reconcile_seconds,
            lifecycle_tick_seconds,
            cycle_errors,
            lifecycle_transitions,
            claim_seconds,
            task_restarts,
            leader,
            notifications_sent,
            notifications_failed,
            notifications_pending,
            notifications_dispatch_seconds,
            retention_purged,
        }
    }

    /// Records whether this replica leads `loop_name`.
    pub fn set_leader(&self, loop_name: &str, leading: bool) {
        let labels = LoopLabels { r#loop: loop_name.to_owned() };
        self.leader.get_or_create(&labels).set(i64::from(leading));
    }

    /// Counts one error of `kind` (an error's `label()`) met by `loop_name`.
    pub fn count_error(&self, loop_name: &str, kind: &str) {
        let labels = ErrorLabels { r#loop: loop_name.to_owned(), kind: kind.to_owned() };
        self.cycle_errors.get_or_create(&labels).inc();
    }

    /// Replaces the pool-wide series; `None` removes them (this replica does not lead).
    pub fn set_pool_state(&self, state: Option<PoolState>) {
        self.pool_state.set(state);
    }

    /// The pool-wide state last set.
    pub fn pool_state(&self) -> Option<PoolState> {
        self.pool_state.get()
    }

    /// Exports `pool`'s connections in use (read at scrape time, from memory). The first
    /// pool given wins: a daemon has one.
    pub fn watch_db_pool(&self, pool: DbPool) {
        let _ = self.db_pool.0.set(PoolHandle(pool));
    }

    /// Exports how `claims` batches the API's claims (read at scrape time, from memory). The
    /// first batcher given wins: a daemon serves one API.
    pub fn watch_claims(&self, claims: ClaimBatcher) {
        let _ = self.claims.0.set(claims);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = match self.registry.lock() {
            Ok(registry) => registry,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

struct PoolHandle(DbPool);

impl std::fmt::Debug for PoolHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DbPool")
    }
}

#[derive(Debug, Clone, Default)]
struct DbPoolSlot(Arc<OnceLock<PoolHandle>>);

impl Collector for DbPoolSlot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let family = encoder.encode_descriptor(
            "db_pool_connections_in_use",
            "Database connections checked out of the pool",
            None,
            MetricType::Gauge,
        )?;
        if let Some(PoolHandle(pool)) = self.0.get() {
            let status = pool.status();
            let in_use = status.size.saturating_sub(status.available);
            ConstGauge::new(i64::try_from(in_use).unwrap_or(i64::MAX)).encode(family)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
struct ClaimBatcherSlot(Arc<OnceLock<ClaimBatcher>>);

impl Collector for ClaimBatcherSlot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(claims) = self.0.get() else { return Ok(()) };
        let counters = [
            (
                "claim_batches",
                "Claim batches run, each taking every claim waiting (one or more)",
                claims.batches(),
            ),
            (
                "claims_batched",
                "Claims a batch handed a prebuild (the others took the one-by-one path)",
                claims.handed_in_batches(),
            ),
        ];
        for (name, help, value) in counters {
            let family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(family)?;
        }
        Ok(())
    }
}
