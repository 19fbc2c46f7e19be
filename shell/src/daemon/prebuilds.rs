//! One prebuild reconciliation cycle: lead? paused? load, plan (core), apply in parallel.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use poolkeeper_core::prebuilds::{plan, Action, Preset, PresetPlan, ReconcilerConfig};
use poolkeeper_core::ReplayInput;
use tracing::Instrument;
use uuid::Uuid;

use super::leader::{Leadership, PREBUILDS_LEASE};
use super::pool_metrics::{pool_state, preset_series};
use super::recorder::{cycle_name, Recorder};
use super::DaemonError;
use crate::db::DbPool;
use crate::store::metrics::{load_metrics_figures, MetricsFigures};
use crate::store::pool_samples::record_pool_samples;
use crate::store::prebuilds::{apply_preset_plan, load_prebuild_snapshot};
use crate::store::publish::publish_jobs;
use crate::store::settings::reconciliation_paused;
use crate::store::StoreError;
use crate::telemetry::{Metrics, PresetSeries};

/// This loop's name in metric labels.
const LOOP: &str = "prebuilds";

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
    pub presets: usize,
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
    config: ReconcilerConfig,
    parallelism: usize,
    metrics: Option<Arc<Metrics>>,
    recorder: Option<Recorder>,
    /// The last figures read for the metrics (kept when a read fails).
    figures: Option<MetricsFigures>,
}

impl PrebuildReconciler {
    /// `url` opens the leadership connection; `parallelism` bounds presets applied at once.
    pub fn new(pool: DbPool, url: &str, config: ReconcilerConfig, parallelism: usize) -> Self {
        Self {
            pool,
            leader: Leadership::new(url, PREBUILDS_LEASE),
            config,
            parallelism: parallelism.max(1),
            metrics: None,
            recorder: None,
            figures: None,
        }
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

    /// Runs one cycle at `now`. A preset whose apply fails is logged and counted; the
    /// others still run.
    pub async fn cycle(&mut self, now: DateTime<Utc>) -> Result<CycleOutcome, DaemonError> {
        let span = tracing::info_span!("prebuild_cycle", %now);
        let started = Instant::now();
        let outcome = self.cycle_inner(now).instrument(span.clone()).await;
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
        let (paused, loaded) = {
            let mut conn = self.pool.get().await.map_err(StoreError::from)?;
            // Checked at the start of every cycle, so a pause takes effect within one.
            let paused = reconciliation_paused(&mut conn).await?;
            if paused {
                tracing::info!("prebuild reconciliation paused");
                if self.metrics.is_none() {
                    return Ok(CycleOutcome::Paused);
                }
            }
            // Loaded even while paused when metrics are kept: they still show the pool.
            (paused, load_prebuild_snapshot(&mut conn, now, self.config).await?)
        };
        let snapshot = loaded.snapshot;
        let snapshot_presets = snapshot.presets.len();
        let plans = plan(now, &snapshot);
        if paused {
            self.observe(true, preset_series(&snapshot.presets, &plans, &loaded.names)).await;
            return Ok(CycleOutcome::Paused);
        }
        if let Some(recorder) = &self.recorder {
            let mut input = ReplayInput::new(now);
            input.prebuilds = Some(snapshot.clone());
            let output = poolkeeper_core::run_replay(&input);
            if let Err(err) = recorder.record(&cycle_name(now, "prebuilds"), &input, &output) {
                tracing::warn!(error = %err, "cannot record the cycle");
            }
        }
        let next_check_at = plans.iter().filter_map(|p| p.next_check_at).min();
        // Exported after the apply, so that its creations count in the totals.
        let series = preset_series(&snapshot.presets, &plans, &loaded.names);
        // Owned items: borrowed ones make the cycle future not provably `Send` (rustc's
        // higher-ranked lifetime limits), and the loop runs in a spawned task.
        let work: Vec<(Preset, PresetPlan)> = snapshot
            .presets
            .into_iter()
            .zip(plans)
            .filter(|(_, p)| p.actions.iter().any(|a| !matches!(a, Action::Backoff { .. })))
            .collect();
        let mut stats = CycleStats {
            presets: snapshot_presets,
            presets_with_actions: work.len(),
            next_check_at,
            ..CycleStats::default()
        };
        let results: Vec<(uuid::Uuid, Result<Vec<uuid::Uuid>, StoreError>)> = stream::iter(work)
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
        for (preset_id, result) in results {
            match result {
                Ok(jobs) => {
                    publish_jobs(&jobs);
                    stats.jobs += jobs.len();
                }
                Err(err) => {
                    stats.failures += 1;
                    if let Some(metrics) = &self.metrics {
                        metrics.count_error(LOOP, err.label());
                    }
                    tracing::warn!(%preset_id, error = %err, kind = err.label(), "preset apply failed");
                }
            }
        }
        tracing::info!(
            presets = stats.presets,
            with_actions = stats.presets_with_actions,
            jobs = stats.jobs,
            failures = stats.failures,
            "prebuild cycle done"
        );
        // The dashboard's 24-hour chart: one sample per preset and cycle, fenced, best effort.
        let samples: Vec<_> = series.iter().map(|(id, s)| (*id, s.desired, s.eligible)).collect();
        if let Err(err) = record_pool_samples(&self.pool, &fence, now, &samples).await {
            tracing::warn!(error = %err, kind = err.label(), "cannot record the pool samples");
        }
        self.observe(false, series).await;
        Ok(CycleOutcome::Ran(stats))
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
