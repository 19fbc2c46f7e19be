//! One lifecycle tick: lead? load the candidates, decide (core), apply each decision.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use poolkeeper_core::lifecycle::plan;
use poolkeeper_core::ReplayInput;
use tracing::Instrument;

use super::leader::{Leadership, LIFECYCLE_LOCK_KEY};
use super::recorder::{cycle_name, Recorder};
use super::DaemonError;
use crate::db::DbPool;
use crate::store::lifecycle::{apply_lifecycle_decision, load_lifecycle_snapshot, Applied};
use crate::store::publish::publish_jobs;
use crate::telemetry::metrics::{Metrics, TransitionLabels};

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
    metrics: Option<Arc<Metrics>>,
    recorder: Option<Recorder>,
}

impl LifecycleExecutor {
    pub fn new(pool: DbPool, url: &str) -> Self {
        Self {
            pool,
            leader: Leadership::new(url, LIFECYCLE_LOCK_KEY),
            metrics: None,
            recorder: None,
        }
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn with_recorder(mut self, recorder: Option<Recorder>) -> Self {
        self.recorder = recorder;
        self
    }

    /// One tick at `now`; `None` when another replica leads.
    pub async fn tick(&mut self, now: DateTime<Utc>) -> Result<Option<TickStats>, DaemonError> {
        let started = Instant::now();
        let result =
            self.tick_inner(now).instrument(tracing::info_span!("lifecycle_tick", %now)).await;
        if let Some(metrics) = &self.metrics {
            let labels = Metrics::loop_labels("lifecycle");
            metrics.cycle_seconds.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
            if result.is_err() {
                metrics.cycle_failures.get_or_create(&labels).inc();
            }
        }
        result
    }

    async fn tick_inner(&mut self, now: DateTime<Utc>) -> Result<Option<TickStats>, DaemonError> {
        if !self.leader.is_leader().await? {
            return Ok(None);
        }
        let snapshot = {
            let mut conn = self.pool.get().await.map_err(crate::store::StoreError::from)?;
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
        for decision in decisions.iter().filter(|d| d.has_effect()) {
            match apply_lifecycle_decision(&self.pool, now, decision).await {
                Ok(Applied::Done { decision, job_id }) => {
                    stats.applied += 1;
                    if let Some(job_id) = job_id {
                        publish_jobs(&[job_id]);
                    }
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
                Ok(Applied::Skipped(_)) => stats.skipped += 1,
                Err(err) => {
                    stats.failures += 1;
                    tracing::warn!(workspace_id = %decision.workspace_id, error = %err, kind = err.label(), "lifecycle apply failed");
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
}
