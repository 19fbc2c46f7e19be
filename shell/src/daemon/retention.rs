//! The retention purge (rules §6): on the replica that holds the `retention` lease, every
//! interval, history older than its setting is deleted in small batches, each batch a short
//! transaction of its own fenced by the lease, so the purge never holds locks for long and a
//! deposed leader deletes nothing more.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use poolkeeper_core::retention::{cutoff, Retention};
use uuid::Uuid;

use super::leader::{Leadership, RETENTION_LEASE};
use super::DaemonError;
use crate::db::DbPool;
use crate::store::retention::{purge_audit, purge_builds, Purged};
use crate::telemetry::metrics::{Metrics, TableLabels};

/// The purge's settings (`poolkeeper run --retention-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    pub retention: Retention,
    /// Time between two purges.
    pub interval: Duration,
    /// Rows (audit entries) or workspaces (builds) per batch.
    pub batch: u32,
}

/// At most this many batches per table and purge: a purge that has more to do continues at
/// the next interval rather than running without a bound.
const MAX_BATCHES: usize = 1000;

pub struct Purger {
    pool: DbPool,
    leader: Leadership,
    settings: RetentionSettings,
    metrics: Option<Arc<Metrics>>,
}

impl Purger {
    pub fn new(pool: DbPool, url: &str, settings: RetentionSettings) -> Self {
        Self { pool, leader: Leadership::new(url, RETENTION_LEASE), settings, metrics: None }
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.leader = self.leader.with_ttl(ttl);
        self
    }

    pub fn lease_ttl(&self) -> Duration {
        self.leader.ttl()
    }

    pub async fn release_leadership(&mut self) {
        self.leader.release().await;
    }

    /// One purge at `now`; `None` when another replica leads.
    pub async fn purge(&mut self, now: DateTime<Utc>) -> Result<Option<Purged>, DaemonError> {
        if !self.leader.is_leader().await? {
            return Ok(None);
        }
        let Some(fence) = self.leader.fence().cloned() else { return Ok(None) };
        let RetentionSettings { retention, batch, .. } = self.settings;
        let mut total = Purged::default();
        if let Some(at) = cutoff(now, retention.builds_secs) {
            let mut cursor = Uuid::nil();
            for _ in 0..MAX_BATCHES {
                let (purged, next) = purge_builds(&self.pool, &fence, at, cursor, batch).await?;
                total.builds += purged.builds;
                total.agents += purged.agents;
                self.count(&[
                    ("builds", purged.builds),
                    ("jobs", purged.builds),
                    ("agents", purged.agents),
                ]);
                let Some(next) = next else { break };
                cursor = next;
            }
        }
        if let Some(at) = cutoff(now, retention.audit_secs) {
            for _ in 0..MAX_BATCHES {
                let n = purge_audit(&self.pool, &fence, at, batch).await?;
                total.audit += n;
                self.count(&[("audit_log", n)]);
                if n < u64::from(batch.max(1)) {
                    break;
                }
            }
        }
        tracing::info!(
            builds = total.builds,
            agents = total.agents,
            audit = total.audit,
            "retention purge done"
        );
        Ok(Some(total))
    }

    fn count(&self, rows: &[(&str, u64)]) {
        let Some(metrics) = &self.metrics else { return };
        for (table, n) in rows {
            let labels = TableLabels { table: (*table).to_owned() };
            metrics.retention_purged.get_or_create(&labels).inc_by(*n);
        }
    }
}
