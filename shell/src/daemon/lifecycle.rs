//! One lifecycle tick: lead? load the candidates, decide (core), apply the decisions a few
//! at a time (issue #5). Each decision still gets its own short transaction and its job is
//! published after that commit; one workspace failing is counted and never aborts a tick.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use poolkeeper_core::lifecycle::{plan, Decision};
use poolkeeper_core::ReplayInput;
use tracing::Instrument;

use super::leader::{Leadership, LIFECYCLE_LEASE};
use super::recorder::{cycle_name, Recorder};
use super::DaemonError;
use crate::db::DbPool;
use crate::store::lifecycle::{apply_lifecycle_decision, load_lifecycle_snapshot, Applied};
use crate::store::publish::publish_jobs;
use crate::store::StoreError;
use crate::telemetry::metrics::{Metrics, TransitionLabels};

/// This loop's name in metric labels.
const LOOP: &str = "lifecycle";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickStats {
    pub workspaces: usize,
    pub applied: usize,
    pub skipped: usize,
    pub failures: usize,
}

pub struct LifecycleExecutor {
    pool: DbPool,
    leader: Leadership,
    parallelism: usize,
    metrics: Option<Arc<Metrics>>,
    recorder: Option<Recorder>,
}

impl LifecycleExecutor {
    /// Applies up to half the pool's connections' worth of decisions at once (as the
    /// prebuild reconciler does), leaving the rest to the other loop and the API.
    pub fn new(pool: DbPool, url: &str) -> Self {
        let parallelism = (pool.status().max_size / 2).max(1);
        Self {
            pool,
            leader: Leadership::new(url, LIFECYCLE_LEASE),
            parallelism,
            metrics: None,
            recorder: None,
        }
    }

    /// Decisions applied at once (at least one).
    pub fn with_parallelism(mut self, parallelism: usize) -> Self {
        self.parallelism = parallelism.max(1);
        self
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

    /// One tick at `now`; `None` when another replica leads.
    pub async fn tick(&mut self, now: DateTime<Utc>) -> Result<Option<TickStats>, DaemonError> {
        let started = Instant::now();
        let result =
            self.tick_inner(now).instrument(tracing::info_span!("lifecycle_tick", %now)).await;
        if let Some(metrics) = &self.metrics {
            metrics.lifecycle_tick_seconds.observe(started.elapsed().as_secs_f64());
            if let Err(err) = &result {
                metrics.count_error(LOOP, err.label());
            }
        }
        result
    }

    async fn tick_inner(&mut self, now: DateTime<Utc>) -> Result<Option<TickStats>, DaemonError> {
        if !self.leader.is_leader().await? {
            return Ok(None);
        }
        let Some(fence) = self.leader.fence().cloned() else { return Ok(None) };
        let snapshot = {
            let mut conn = self.pool.get().await.map_err(StoreError::from)?;
            load_lifecycle_snapshot(&mut conn, now).await?
        };
        let decisions = plan(now, &snapshot);
        if let Some(recorder) = &self.recorder {
            let mut input = ReplayInput::new(now);
            input.lifecycle = Some(snapshot.clone());
            let output = poolkeeper_core::run_replay(&input);
            if let Err(err) = recorder.record(&cycle_name(now, "lifecycle"), &input, &output) {
                tracing::warn!(error = %err, "cannot record the tick");
            }
        }
        let mut stats = TickStats { workspaces: decisions.len(), ..TickStats::default() };
        // Owned decisions: borrowed ones make the tick future not provably `Send`, and the
        // loop runs in a spawned task.
        let work: Vec<Decision> = decisions.into_iter().filter(Decision::has_effect).collect();
        let mut results = stream::iter(work)
            .map(|decision| {
                let pool = self.pool.clone();
                let fence = fence.clone();
                let span = tracing::info_span!(
                    "lifecycle_apply",
                    workspace_id = %decision.workspace_id,
                    transition = decision.transition.map(|t| t.as_str()),
                    reason = decision.reason.map(|r| r.as_str()),
                );
                async move {
                    let result = apply_lifecycle_decision(&pool, &fence, now, &decision).await;
                    // Published as soon as its own transaction committed.
                    if let Ok(Applied::Done { job_id: Some(job_id), .. }) = &result {
                        publish_jobs(&[*job_id]);
                    }
                    (decision.workspace_id, result)
                }
                .instrument(span)
            })
            .buffer_unordered(self.parallelism);
        while let Some((workspace_id, result)) = results.next().await {
            match result {
                Ok(Applied::Done { decision, .. }) => {
                    stats.applied += 1;
                    self.count_transition(&decision);
                }
                Ok(Applied::Skipped(_)) => stats.skipped += 1,
                Err(err) => {
                    stats.failures += 1;
                    if let Some(metrics) = &self.metrics {
                        metrics.count_error(LOOP, err.label());
                    }
                    tracing::warn!(%workspace_id, error = %err, kind = err.label(), "lifecycle apply failed");
                }
            }
        }
        tracing::info!(
            workspaces = stats.workspaces,
            applied = stats.applied,
            skipped = stats.skipped,
            failures = stats.failures,
            "lifecycle tick done"
        );
        Ok(Some(stats))
    }

    fn count_transition(&self, decision: &Decision) {
        if let (Some(metrics), Some(t), Some(r)) =
            (&self.metrics, decision.transition, decision.reason)
        {
            let labels = TransitionLabels {
                transition: t.as_str().to_owned(),
                reason: r.as_str().to_owned(),
            };
            metrics.lifecycle_transitions.get_or_create(&labels).inc();
        }
    }
}
