//! One prebuild reconciliation cycle: lead? paused? refresh the kept snapshot from the
//! change feed, plan (core) the presets whose inputs changed or whose plan is due, apply in
//! parallel. A full reload happens on the first cycle, after any failure or loss of
//! leadership, and every resync interval.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use poolkeeper_core::prebuilds::{Action, Preset, PresetPlan, ReconcilerConfig};
use poolkeeper_core::ReplayInput;
use tracing::Instrument;
use uuid::Uuid;

use super::leader::{Leadership, PREBUILDS_LEASE};
use super::plans::{has_work, KeptPlans};
use super::pool_metrics::{pool_state, preset_series};
use super::recorder::{cycle_name, Recorder};
use super::DaemonError;
use crate::db::DbPool;
use crate::store::metrics::{load_metrics_figures, MetricsFigures};
use crate::store::pool_samples::{bucket_of, record_pool_samples};
use crate::store::prebuilds::{
    apply_preset_plan, create_prebuilds, Creates, PrebuildFeed, Refreshed, CREATES_PER_TRANSACTION,
};
use crate::store::publish::publish_jobs;
use crate::store::settings::reconciliation_paused;
use crate::store::StoreError;
use crate::telemetry::{Metrics, PresetSeries};

/// This loop's name in metric labels.
const LOOP: &str = "prebuilds";

/// How often the kept snapshot is reloaded whole by default (`--prebuild-resync-interval`):
/// a bound on how long a change the feed could not see (a row edited by hand with the
/// triggers disabled) stays unseen.
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(300);

/// What one cycle did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CycleOutcome {
    /// Another replica leads this loop.
    NotLeader,
    /// Reconciliation is paused (`poolkeeper prebuilds pause`).
    Paused,
    Ran(CycleStats),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CycleStats {
    /// Presets in the snapshot.
    pub presets: usize,
    /// Presets planned this cycle: changed inputs, a due `next_check_at`, unfinished work,
    /// or all of them after a full reload.
    pub planned: usize,
    /// Whether the snapshot was reloaded whole.
    pub full_reload: bool,
    pub presets_with_actions: usize,
    pub jobs: usize,
    pub failures: usize,
    /// The earliest instant at which some preset's plan could change by time alone (a
    /// backoff that ends, a window edge, an expiry): the loop wakes then.
    pub next_check_at: Option<DateTime<Utc>>,
}

pub struct PrebuildReconciler {
    pool: DbPool,
    leader: Leadership,
    parallelism: usize,
    metrics: Option<Arc<Metrics>>,
    recorder: Option<Recorder>,
    /// The last figures read for the metrics (kept when a read fails).
    figures: Option<MetricsFigures>,
    feed: PrebuildFeed,
    plans: KeptPlans,
    resync_interval: Duration,
    creates_per_transaction: usize,
    last_full_reload: Option<Instant>,
    /// The five-minute bucket of the dashboard's chart this leader last sampled.
    sampled_bucket: Option<DateTime<Utc>>,
}

impl PrebuildReconciler {
    /// `url` opens the leadership connection; `parallelism` bounds presets applied at once.
    pub fn new(pool: DbPool, url: &str, config: ReconcilerConfig, parallelism: usize) -> Self {
        Self {
            pool,
            leader: Leadership::new(url, PREBUILDS_LEASE),
            parallelism: parallelism.max(1),
            metrics: None,
            recorder: None,
            figures: None,
            feed: PrebuildFeed::new(config),
            plans: KeptPlans::default(),
            resync_interval: DEFAULT_RESYNC_INTERVAL,
            creates_per_transaction: CREATES_PER_TRANSACTION,
            last_full_reload: None,
            sampled_bucket: None,
        }
    }

    /// How often the kept snapshot is reloaded whole (see [`DEFAULT_RESYNC_INTERVAL`]).
    pub fn with_resync_interval(mut self, every: Duration) -> Self {
        self.resync_interval = every;
        self
    }

    /// About how many new prebuilds one transaction creates (whole presets are never split).
    pub fn with_creates_per_transaction(mut self, creates: usize) -> Self {
        self.creates_per_transaction = creates.max(1);
        self
    }

    /// Forgets the kept snapshot and plans: the next cycle reloads everything.
    pub fn forget(&mut self) {
        self.feed.reset();
        self.plans.clear();
        self.last_full_reload = None;
    }

    /// Also exports this loop's connection pool (the first pool a `Metrics` sees wins).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        metrics.watch_db_pool(self.pool.clone());
        self.metrics = Some(metrics);
        self
    }

    pub fn with_recorder(mut self, recorder: Option<Recorder>) -> Self {
        self.recorder = recorder;
        self
    }

    /// How long this loop's leader lease lasts without renewal (see [`Leadership::with_ttl`]).
    pub fn with_lease_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.leader = self.leader.with_ttl(ttl);
        self
    }

    /// The lease's duration, which also bounds a cycle: a cycle that outlives its lease can
    /// no longer write anyway.
    pub fn lease_ttl(&self) -> std::time::Duration {
        self.leader.ttl()
    }

    /// Gives up leadership at once (graceful shutdown).
    pub async fn release_leadership(&mut self) {
        self.leader.release().await;
    }

    /// Whether the change feed holds something this leader's kept snapshot has not read (a
    /// claim that emptied a pool, a job that ended, an agent that became ready): asked
    /// between cycles, so those are acted on within the poll rather than at the next cycle.
    /// `false`, with no statement, when not leading or while nothing is kept.
    pub async fn has_unread_changes(&self) -> Result<bool, DaemonError> {
        if self.leader.fence().is_none() {
            return Ok(false);
        }
        Ok(self.feed.has_unread(&self.pool).await?)
    }

    /// Runs one cycle at `now`. A preset whose apply fails is logged and counted; the
    /// others still run.
    pub async fn cycle(&mut self, now: DateTime<Utc>) -> Result<CycleOutcome, DaemonError> {
        let span = tracing::info_span!("prebuild_cycle", %now);
        let started = Instant::now();
        let outcome = self.cycle_inner(now).instrument(span.clone()).await;
        if !matches!(outcome, Ok(CycleOutcome::Ran(_) | CycleOutcome::Paused)) {
            // Not leading, or some step failed: what is kept may be stale or half-updated.
            self.forget();
        }
        if let Some(metrics) = &self.metrics {
            metrics.reconcile_seconds.observe(started.elapsed().as_secs_f64());
            match &outcome {
                Err(err) => metrics.count_error(LOOP, err.label()),
                // Only the leader exports the pool, so replicas never report it twice.
                Ok(CycleOutcome::NotLeader) => metrics.set_pool_state(None),
                Ok(_) => {}
            }
        }
        outcome
    }

    async fn cycle_inner(&mut self, now: DateTime<Utc>) -> Result<CycleOutcome, DaemonError> {
        if !self.leader.is_leader().await? {
            return Ok(CycleOutcome::NotLeader);
        }
        let Some(fence) = self.leader.fence().cloned() else {
            return Ok(CycleOutcome::NotLeader);
        };
        let (paused, refreshed) = {
            let mut conn = self.pool.get().await.map_err(StoreError::from)?;
            // Checked at the start of every cycle, so a pause takes effect within one.
            let paused = reconciliation_paused(&mut conn).await?;
            if paused {
                tracing::info!("prebuild reconciliation paused");
                if self.metrics.is_none() {
                    return Ok(CycleOutcome::Paused);
                }
            }
            // Refreshed even while paused when metrics are kept: they still show the pool.
            let full = self.last_full_reload.is_none_or(|at| at.elapsed() >= self.resync_interval);
            let refreshed = self.feed.refresh(&mut conn, now, full).await?;
            if !paused {
                self.feed.prune(&mut conn, &fence).await?;
            }
            (paused, refreshed)
        };
        let full_reload = refreshed == Refreshed::Full;
        if full_reload {
            self.last_full_reload = Some(Instant::now());
        }
        let (loaded, plans) = self.plans.replan(self.feed.kept(), refreshed, now);
        let snapshot = loaded.snapshot;
        let snapshot_presets = self.plans.len();
        if paused {
            let series = self.all_series();
            self.observe(true, series).await;
            return Ok(CycleOutcome::Paused);
        }
        if let Some(recorder) = &self.recorder {
            // The whole snapshot, as a full reload would read it: replays need no feed.
            let mut input = ReplayInput::new(now);
            input.prebuilds = Some(self.feed.kept().assemble(None, now).snapshot);
            let output = poolkeeper_core::run_replay(&input);
            if let Err(err) = recorder.record(&cycle_name(now, "prebuilds"), &input, &output) {
                tracing::warn!(error = %err, "cannot record the cycle");
            }
        }
        let next_check_at = self.plans.next_check_at();
        // Exported after the apply, so that its creations count in the totals.
        let series = self.all_series();
        let planned = plans.len();
        // Owned items: borrowed ones make the cycle future not provably `Send` (rustc's
        // higher-ranked lifetime limits), and the loop runs in a spawned task.
        let work: Vec<(Preset, PresetPlan)> =
            snapshot.presets.into_iter().zip(plans).filter(|(_, p)| has_work(p)).collect();
        let mut stats = CycleStats {
            presets: snapshot_presets,
            planned,
            full_reload,
            presets_with_actions: work.len(),
            next_check_at,
            ..CycleStats::default()
        };
        // Creates go after each preset's other actions (rules §4: deletes before the
        // create), batched across presets (a few transactions for thousands of presets).
        let mut creates = Vec::new();
        let others: Vec<(Preset, PresetPlan)> = work
            .into_iter()
            .filter_map(|(preset, mut preset_plan)| {
                preset_plan.actions.retain(|action| match action {
                    Action::Create { count } => {
                        creates.push(Creates { preset: preset.clone(), count: *count });
                        false
                    }
                    _ => true,
                });
                has_work(&preset_plan).then_some((preset, preset_plan))
            })
            .collect();
        let results: Vec<(Uuid, Result<Vec<Uuid>, StoreError>)> = stream::iter(others)
            .map(|(preset, preset_plan)| {
                let pool = self.pool.clone();
                let fence = fence.clone();
                async move {
                    let span = tracing::info_span!("apply_preset", preset_id = %preset.id, preset = %preset.name);
                    let result = apply_preset_plan(&pool, &fence, now, &preset, &preset_plan)
                        .instrument(span)
                        .await;
                    (preset.id, result)
                }
            })
            .buffer_unordered(self.parallelism)
            .collect()
            .await;
        let mut failed = HashSet::new();
        for (preset_id, result) in results {
            match result {
                Ok(jobs) => {
                    publish_jobs(&jobs);
                    stats.jobs += jobs.len();
                }
                Err(err) => {
                    failed.insert(preset_id);
                    self.count_error(&err);
                    tracing::warn!(%preset_id, error = %err, kind = err.label(), "preset apply failed");
                }
            }
        }
        let per_transaction = self.creates_per_transaction;
        let batches =
            create_prebuilds(&self.pool, &fence, now, creates, per_transaction, self.parallelism)
                .await;
        for batch in batches {
            match batch.jobs {
                Ok(jobs) => {
                    for jobs in jobs.values() {
                        publish_jobs(jobs);
                        stats.jobs += jobs.len();
                    }
                }
                Err(err) => {
                    self.count_error(&err);
                    tracing::warn!(presets = batch.presets.len(), error = %err, kind = err.label(), "prebuild creates failed");
                    failed.extend(batch.presets);
                }
            }
        }
        stats.failures = failed.len();
        tracing::info!(
            presets = stats.presets,
            planned = stats.planned,
            full_reload = stats.full_reload,
            with_actions = stats.presets_with_actions,
            jobs = stats.jobs,
            failures = stats.failures,
            "prebuild cycle done"
        );
        // The dashboard's 24-hour chart: the first cycle of each five-minute bucket samples
        // every pool (fenced, best effort); the other cycles write nothing. The figures are
        // the exported series', so only a reconciler with metrics (the daemon's) samples.
        if self.sampled_bucket != Some(bucket_of(now)) {
            let samples: Vec<_> =
                series.iter().map(|(id, s)| (*id, s.desired, s.eligible)).collect();
            match record_pool_samples(&self.pool, &fence, now, &samples).await {
                Ok(()) => self.sampled_bucket = Some(bucket_of(now)),
                Err(err) => {
                    tracing::warn!(error = %err, kind = err.label(), "cannot record the pool samples")
                }
            }
        }
        self.observe(false, series).await;
        Ok(CycleOutcome::Ran(stats))
    }

    fn count_error(&self, err: &StoreError) {
        if let Some(metrics) = &self.metrics {
            metrics.count_error(LOOP, err.label());
        }
    }

    /// The metric series of every preset, from the kept snapshot's presets and the latest
    /// plans (empty when no metrics are kept: nothing reads them).
    fn all_series(&self) -> Vec<(Uuid, PresetSeries)> {
        if self.metrics.is_none() {
            return Vec::new();
        }
        let (presets, names) = self.feed.kept().presets();
        let plans: Vec<PresetPlan> =
            presets.iter().filter_map(|p| self.plans.get(&p.id).cloned()).collect();
        preset_series(&presets, &plans, &names)
    }

    /// Swaps in the pool-wide metrics of this cycle. The totals come from a read-only
    /// query; when it fails the previous totals stay (counters must not reset).
    async fn observe(&mut self, paused: bool, series: Vec<(Uuid, PresetSeries)>) {
        let Some(metrics) = self.metrics.clone() else { return };
        let ids: Vec<Uuid> = series.iter().map(|(id, _)| *id).collect();
        let span = tracing::info_span!("prebuild_metrics", presets = ids.len());
        let loaded = async {
            let mut conn = self.pool.get().await.map_err(StoreError::from)?;
            load_metrics_figures(&mut conn, &ids).await
        }
        .instrument(span)
        .await;
        match loaded {
            Ok(figures) => self.figures = Some(figures),
            Err(err) => {
                metrics.count_error(LOOP, err.label());
                tracing::warn!(error = %err, kind = err.label(), "cannot read the metrics figures");
            }
        }
        let state = pool_state(paused, series, self.figures.as_ref());
        metrics.set_pool_state(Some(state));
    }
}
