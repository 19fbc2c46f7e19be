//! One lifecycle tick: lead? load the candidates, decide (core), apply the due ones in
//! batches of [`APPLY_BATCH`], a few batches at a time. A batch is one short transaction
//! whose jobs are published after its commit; a row someone else holds is applied alone
//! afterwards; one workspace failing is counted and never aborts a tick.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use poolkeeper_core::lifecycle::{plan, Decision};
use poolkeeper_core::ReplayInput;
use tracing::Instrument;
use uuid::Uuid;

use super::leader::{Leadership, LIFECYCLE_LEASE};
use super::recorder::{cycle_name, Recorder};
use super::DaemonError;
use crate::db::DbPool;
use crate::store::leases::Fence;
use crate::store::lifecycle::{
    apply_lifecycle_batch, apply_lifecycle_workspace, load_lifecycle_snapshot, Applied,
    BatchApplied,
};
use crate::store::publish::publish_jobs;
use crate::store::StoreError;
use crate::telemetry::metrics::{Metrics, TransitionLabels};

/// This loop's name in metric labels.
const LOOP: &str = "lifecycle";

/// Workspaces applied per transaction: a batch's rows fit well under PostgreSQL's 65,535
/// bind parameters (about 40 per workspace), and its transaction stays short.
const APPLY_BATCH: usize = 500;

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
        let due: Vec<Uuid> =
            decisions.iter().filter(|d| d.has_effect()).map(|d| d.workspace_id).collect();
        let batches: Vec<Vec<Uuid>> = due.chunks(APPLY_BATCH).map(<[Uuid]>::to_vec).collect();
        let mut results = stream::iter(batches)
            .map(|batch| {
                let pool = self.pool.clone();
                let fence = fence.clone();
                let span = tracing::info_span!("lifecycle_apply", workspaces = batch.len());
                async move { apply_batch(&pool, &fence, now, batch).await }.instrument(span)
            })
            .buffer_unordered(self.parallelism);
        while let Some(outcomes) = results.next().await {
            for (workspace_id, result) in outcomes {
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

/// Applies one batch, then publishes its jobs (committed), then applies one at a time the
/// workspaces it left out (rows someone else held) and publishes each. A batch that fails as
/// a whole (say, a build numbered by a writer that does not lock the workspace) is retried
/// one workspace at a time, so one bad row never costs the others their decision; a fenced
/// batch is not retried: none of it may be written.
async fn apply_batch(
    pool: &DbPool,
    fence: &Fence,
    now: DateTime<Utc>,
    batch: Vec<Uuid>,
) -> Vec<(Uuid, Result<Applied, StoreError>)> {
    let one_at_a_time = match apply_lifecycle_batch(pool, fence, now, &batch).await {
        Ok(BatchApplied { outcomes, left_out }) => {
            publish_jobs(&job_ids(outcomes.iter().map(|(_, applied)| applied)));
            let mut results: Vec<_> =
                outcomes.into_iter().map(|(id, applied)| (id, Ok(applied))).collect();
            results.extend(apply_alone(pool, fence, now, left_out).await);
            return results;
        }
        Err(StoreError::Fenced { loop_name, token }) => {
            return batch
                .into_iter()
                .map(|id| (id, Err(StoreError::Fenced { loop_name, token })))
                .collect();
        }
        Err(err) => {
            tracing::warn!(workspaces = batch.len(), error = %err, kind = err.label(), "lifecycle batch failed; applying its workspaces one at a time");
            batch
        }
    };
    apply_alone(pool, fence, now, one_at_a_time).await
}

/// Applies each workspace in its own transaction, publishing its job after its commit.
async fn apply_alone(
    pool: &DbPool,
    fence: &Fence,
    now: DateTime<Utc>,
    workspace_ids: Vec<Uuid>,
) -> Vec<(Uuid, Result<Applied, StoreError>)> {
    let mut results = Vec::with_capacity(workspace_ids.len());
    for workspace_id in workspace_ids {
        let result = apply_lifecycle_workspace(pool, fence, now, workspace_id)
            .instrument(tracing::info_span!("lifecycle_apply_one", %workspace_id))
            .await;
        if let Ok(applied) = &result {
            publish_jobs(&job_ids(std::iter::once(applied)));
        }
        results.push((workspace_id, result));
    }
    results
}

fn job_ids<'a>(applied: impl Iterator<Item = &'a Applied>) -> Vec<Uuid> {
    applied
        .filter_map(|applied| match applied {
            Applied::Done { job_id, .. } => *job_id,
            Applied::Skipped(_) => None,
        })
        .collect()
}
