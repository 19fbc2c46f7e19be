//! Failing jobs nobody is working on: a running job whose worker stopped sending heartbeats,
//! and a pending job no worker took in time. Called from the daemon's lifecycle loop.
//!
//! The reaper's failures are marked `reaped`, not `build`: a lost worker or a long queue is
//! not a build the template failed, so it counts toward no prebuild backoff or hard limit
//! (rules §4). All comparisons use the database's clock (see `store::jobs`).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::ProvisionerError;
use crate::db::DbPool;
use crate::store::jobs::reap_stale;

#[derive(Debug, Clone, PartialEq)]
pub struct ReaperConfig {
    /// A running job whose last heartbeat is older than this has lost its worker.
    pub heartbeat_timeout: Duration,
    /// A pending job older than this fails: no provisioner is serving the queue.
    pub pending_timeout: Duration,
}

impl Default for ReaperConfig {
    fn default() -> Self {
        Self {
            heartbeat_timeout: Duration::from_secs(5 * 60),
            pending_timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// Fail stale jobs; returns how many. A stale `canceling` job ends `canceled` instead (its
/// cancellation is what was asked), as does a `canceling` job no worker ever started.
///
/// `_caller_now` is the caller's clock, deliberately unused: heartbeats are written and
/// compared by the database's clock, so a daemon host whose clock is off cannot reap a job
/// whose worker is alive.
pub async fn reap_stale_jobs(
    pool: &DbPool,
    _caller_now: DateTime<Utc>,
    config: &ReaperConfig,
) -> Result<usize, ProvisionerError> {
    let mut conn = pool.get().await?;
    let reaped = reap_stale(&mut conn, config.heartbeat_timeout, config.pending_timeout).await?;
    if reaped.total() > 0 {
        tracing::warn!(
            stale_running = reaped.running,
            stale_canceling = reaped.canceling,
            stale_pending = reaped.pending,
            heartbeat_timeout_secs = config.heartbeat_timeout.as_secs(),
            "reaped stale jobs"
        );
    }
    Ok(reaped.total())
}
