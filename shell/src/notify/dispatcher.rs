//! The dispatcher: leases due messages (`FOR UPDATE SKIP LOCKED`, with an expiry), sends
//! each by every configured method, and records every attempt and the message's outcome
//! as `poolkeeper_core::notifications` decides it (rules §5). Any number of dispatchers may
//! run on one database: a lease is one dispatcher's while it lasts, and a message whose
//! dispatcher died is due again when its lease runs out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use poolkeeper_core::notifications::{message_outcome, retry_delay, Outcome};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::message::Message;
use super::method::Notifier;
use crate::db::enums::{AttemptOutcome, DeliveryStatus};
use crate::db::DbPool;
use crate::store::delivery::{self, AttemptRecord, LeasedMessage};
use crate::store::StoreError;
use crate::telemetry::metrics::{Metrics, NotificationFailureLabels, NotificationLabels};

/// How the dispatcher paces itself.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// How long a leased message is this dispatcher's; must exceed the time it takes to
    /// send it by every method (their timeouts).
    pub lease: Duration,
    /// Time between passes over the outbox.
    pub interval: Duration,
    /// Messages leased at once.
    pub batch: i64,
    /// Messages sent at once.
    pub concurrency: usize,
    /// Attempts before a message that keeps failing temporarily is given up.
    pub max_attempts: u32,
    /// First retry delay, doubled per attempt up to `max_retry_delay` (with jitter).
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
    /// Finished messages older than this are deleted; `None` keeps them.
    pub retention: Option<Duration>,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(120),
            interval: Duration::from_secs(10),
            batch: 20,
            concurrency: 8,
            max_attempts: 5,
            retry_delay: Duration::from_secs(30),
            max_retry_delay: Duration::from_secs(3600),
            retention: Some(Duration::from_secs(30 * 86_400)),
        }
    }
}

/// How often retention runs (it is one indexed-free scan of finished rows).
const PRUNE_EVERY: Duration = Duration::from_secs(600);
const PRUNE_BATCH: i64 = 1000;
/// At most this many batches per run: a large backlog is worked off over several runs.
const PRUNE_MAX_BATCHES: u32 = 100;
/// Passes per wake-up at most (each leases a batch), so one loop iteration is bounded.
const MAX_PASSES: u32 = 50;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassStats {
    pub leased: usize,
    pub sent: usize,
    pub temporary_failures: usize,
    pub permanent_failures: usize,
    pub inhibited: usize,
    /// Outcomes not recorded because the lease had been taken over meanwhile.
    pub fenced: usize,
}

impl PassStats {
    fn add(&mut self, other: PassStats) {
        self.leased += other.leased;
        self.sent += other.sent;
        self.temporary_failures += other.temporary_failures;
        self.permanent_failures += other.permanent_failures;
        self.inhibited += other.inhibited;
        self.fenced += other.fenced;
    }
}

pub struct Dispatcher {
    id: String,
    pool: DbPool,
    methods: Arc<[Arc<dyn Notifier>]>,
    config: DispatchConfig,
    metrics: Option<Arc<Metrics>>,
}

impl Dispatcher {
    /// A dispatcher with a fresh identity (its leases carry it).
    pub fn new(pool: DbPool, methods: Vec<Arc<dyn Notifier>>, config: DispatchConfig) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "poolkeeper".to_owned());
        let id =
            format!("{host}-{}-{}", std::process::id(), &Uuid::new_v4().simple().to_string()[..8]);
        Self { id, pool, methods: methods.into(), config, metrics: None }
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The name its leases carry (`notifications.leased_by`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Leases one batch of due messages and delivers it.
    pub async fn dispatch_once(&self) -> Result<PassStats, StoreError> {
        let leased =
            delivery::lease(&self.pool, &self.id, self.config.lease, self.config.batch).await?;
        let mut stats = PassStats { leased: leased.len(), ..PassStats::default() };
        let mut outcomes = futures_util::stream::iter(leased)
            .map(|row| self.deliver(row))
            .buffer_unordered(self.config.concurrency.max(1));
        let mut first_error = None;
        while let Some(result) = outcomes.next().await {
            match result {
                Ok((status, held)) => {
                    if !held {
                        stats.fenced += 1;
                    }
                    match status {
                        DeliveryStatus::Sent => stats.sent += 1,
                        DeliveryStatus::TemporaryFailure => stats.temporary_failures += 1,
                        DeliveryStatus::PermanentFailure => stats.permanent_failures += 1,
                        DeliveryStatus::Inhibited => stats.inhibited += 1,
                        DeliveryStatus::Pending => {}
                    }
                }
                // The lease runs out and the message is tried again; report the first.
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(stats),
        }
    }

    /// Passes until a pass finds less than a full batch (at most [`MAX_PASSES`]).
    pub async fn drain(&self) -> Result<PassStats, StoreError> {
        self.drain_until(&CancellationToken::new()).await
    }

    /// [`Dispatcher::drain`], stopping between passes once `shutdown` is cancelled (a pass
    /// in progress finishes: its sends are bounded by the methods' timeouts).
    async fn drain_until(&self, shutdown: &CancellationToken) -> Result<PassStats, StoreError> {
        let mut total = PassStats::default();
        for _ in 0..MAX_PASSES {
            if shutdown.is_cancelled() {
                break;
            }
            let pass = self.dispatch_once().await?;
            total.add(pass);
            if (pass.leased as i64) < self.config.batch {
                break;
            }
        }
        Ok(total)
    }

    /// Deletes finished messages older than the retention (nothing without one).
    pub async fn prune(&self) -> Result<u64, StoreError> {
        let Some(retention) = self.config.retention else { return Ok(0) };
        let before =
            Utc::now() - chrono::TimeDelta::from_std(retention).unwrap_or(chrono::TimeDelta::MAX);
        delivery::prune(&self.pool, before, PRUNE_BATCH, PRUNE_MAX_BATCHES).await
    }

    /// Dispatches every interval until `shutdown`; a pass in progress finishes first.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut last_prune: Option<Instant> = None;
        tracing::info!(dispatcher = %self.id, methods = self.methods.len(), "notification dispatcher started");
        while !shutdown.is_cancelled() {
            match self.drain_until(&shutdown).await {
                Ok(stats) if stats.leased > 0 => tracing::info!(
                    leased = stats.leased,
                    sent = stats.sent,
                    temporary_failures = stats.temporary_failures,
                    permanent_failures = stats.permanent_failures,
                    inhibited = stats.inhibited,
                    fenced = stats.fenced,
                    "notifications dispatched"
                ),
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(error = %err, kind = err.label(), "notification dispatch failed")
                }
            }
            if let Some(metrics) = &self.metrics {
                match delivery::pending_count(&self.pool).await {
                    Ok(pending) => {
                        metrics.notifications_pending.set(pending);
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "counting pending notifications failed")
                    }
                }
            }
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                match self.prune().await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, "old notifications deleted"),
                    Err(err) => tracing::warn!(error = %err, "notification retention failed"),
                }
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.config.interval) => {}
            }
        }
        tracing::info!(dispatcher = %self.id, "notification dispatcher stopped");
    }

    /// Sends one leased message by every method it still needs and records the outcome.
    /// Returns the message's new status and whether the lease was still held.
    async fn deliver(&self, row: LeasedMessage) -> Result<(DeliveryStatus, bool), StoreError> {
        let message = Message::from_leased(&row);
        let attempt = u32::try_from(row.attempts).unwrap_or(u32::MAX);
        let mut records = Vec::new();
        let mut outcomes = Vec::new();
        let unreachable: Vec<_> =
            self.methods.iter().filter_map(|m| m.unreachable(&message.recipient)).collect();
        if !row.enabled {
            for method in self.methods.iter() {
                records.push(record(method.method(), Outcome::Inhibited, None));
            }
            outcomes.push(Outcome::Inhibited);
        } else if unreachable.len() == self.methods.len() {
            // No method reaches this user: say why, once per method, and give up.
            for (method, why) in self.methods.iter().zip(&unreachable) {
                records.push(record(
                    method.method(),
                    Outcome::PermanentFailure,
                    Some(why.to_string()),
                ));
            }
        } else {
            for method in self.methods.iter() {
                let name = method.method().as_str();
                if row.sent_methods.iter().any(|m| m == name) {
                    outcomes.push(Outcome::Sent);
                    continue;
                }
                if row.failed_methods.iter().any(|m| m == name) {
                    outcomes.push(Outcome::PermanentFailure);
                    continue;
                }
                if method.unreachable(&message.recipient).is_some() {
                    continue;
                }
                let started = Instant::now();
                let result = method.send(&message).await;
                self.observe(name, &message.kind, started.elapsed(), result.as_ref().err());
                let outcome = result.as_ref().err().map_or(Outcome::Sent, |err| err.outcome());
                if let Err(err) = &result {
                    tracing::warn!(notification_id = %message.id, method = name, attempt,
                        error = %err, outcome = outcome.as_str(), "notification not delivered");
                }
                records.push(record(method.method(), outcome, result.err().map(|e| e.to_string())));
                outcomes.push(outcome);
            }
        }
        let status = message_outcome(&outcomes, attempt, self.config.max_attempts);
        let retry_in = (status == Outcome::TemporaryFailure).then(|| {
            retry_delay(attempt, self.config.retry_delay, self.config.max_retry_delay, jitter())
        });
        let status = status_of(status);
        let outcome = delivery::Outcome {
            id: message.id,
            attempt: row.attempts,
            status,
            retry_in,
            attempts: records,
        };
        let held = delivery::record(&self.pool, &self.id, &outcome).await?;
        if !held {
            tracing::warn!(notification_id = %message.id, attempt,
                "the lease ran out before the outcome was recorded; another dispatcher has it");
        }
        Ok((status, held))
    }

    fn observe(&self, method: &str, kind: &str, took: Duration, err: Option<&super::SendError>) {
        let Some(metrics) = &self.metrics else { return };
        metrics.notifications_dispatch_seconds.observe(took.as_secs_f64());
        let (method, kind) = (method.to_owned(), kind.to_owned());
        match err {
            None => {
                metrics
                    .notifications_sent
                    .get_or_create(&NotificationLabels { method, kind })
                    .inc();
            }
            Some(err) => {
                let outcome = err.outcome().as_str().to_owned();
                let labels = NotificationFailureLabels { method, kind, outcome };
                metrics.notifications_failed.get_or_create(&labels).inc();
            }
        }
    }
}

fn record(
    method: crate::db::enums::DeliveryMethod,
    outcome: Outcome,
    error: Option<String>,
) -> AttemptRecord {
    AttemptRecord { method, at: Utc::now(), outcome: attempt_outcome(outcome), error }
}

fn attempt_outcome(outcome: Outcome) -> AttemptOutcome {
    match outcome {
        Outcome::Sent => AttemptOutcome::Sent,
        Outcome::TemporaryFailure => AttemptOutcome::TemporaryFailure,
        Outcome::PermanentFailure => AttemptOutcome::PermanentFailure,
        Outcome::Inhibited => AttemptOutcome::Inhibited,
    }
}

fn status_of(outcome: Outcome) -> DeliveryStatus {
    match outcome {
        Outcome::Sent => DeliveryStatus::Sent,
        Outcome::TemporaryFailure => DeliveryStatus::TemporaryFailure,
        Outcome::PermanentFailure => DeliveryStatus::PermanentFailure,
        Outcome::Inhibited => DeliveryStatus::Inhibited,
    }
}

/// A draw from `[0, 1)` for the retry delay's jitter (from a random UUID's bits: no
/// random-number crate for one number per failure).
fn jitter() -> f64 {
    let bits = Uuid::new_v4().as_u64_pair().0 >> 11;
    bits as f64 / (1u64 << 53) as f64
}
