//! Failing jobs nobody is working on: a running job whose worker stopped sending heartbeats,
//! and a pending job no worker took in time. Called from the daemon's lifecycle loop.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::ProvisionerError;
use crate::db::enums::JobStatus;
use crate::db::schema::provisioner_jobs;
use crate::db::DbPool;

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
pub async fn reap_stale_jobs(
    pool: &DbPool,
    now: DateTime<Utc>,
    config: &ReaperConfig,
) -> Result<usize, ProvisionerError> {
    let mut conn = pool.get().await?;
    let heartbeat_cutoff = before(now, config.heartbeat_timeout);
    let pending_cutoff = before(now, config.pending_timeout);
    let heartbeat_error = format!(
        "the provisioner stopped sending heartbeats (none for {}s): the worker was lost",
        config.heartbeat_timeout.as_secs()
    );
    let stale_running = diesel::update(
        provisioner_jobs::table
            .filter(provisioner_jobs::status.eq(JobStatus::Running))
            .filter(provisioner_jobs::heartbeat_at.lt(heartbeat_cutoff)),
    )
    .set((
        provisioner_jobs::status.eq(JobStatus::Failed),
        provisioner_jobs::completed_at.eq(now),
        provisioner_jobs::error.eq(&heartbeat_error),
    ))
    .execute(&mut conn)
    .await?;
    let stale_canceling = diesel::update(
        provisioner_jobs::table.filter(provisioner_jobs::status.eq(JobStatus::Canceling)).filter(
            provisioner_jobs::heartbeat_at
                .lt(heartbeat_cutoff)
                .or(provisioner_jobs::started_at.is_null()),
        ),
    )
    .set((
        provisioner_jobs::status.eq(JobStatus::Canceled),
        provisioner_jobs::completed_at.eq(now),
        provisioner_jobs::canceled_at.eq(now),
    ))
    .execute(&mut conn)
    .await?;
    let stale_pending = diesel::update(
        provisioner_jobs::table
            .filter(provisioner_jobs::status.eq(JobStatus::Pending))
            .filter(provisioner_jobs::created_at.lt(pending_cutoff)),
    )
    .set((
        provisioner_jobs::status.eq(JobStatus::Failed),
        provisioner_jobs::completed_at.eq(now),
        provisioner_jobs::error.eq(format!(
            "no provisioner acquired the job within {}s: is a provisioner running?",
            config.pending_timeout.as_secs()
        )),
    ))
    .execute(&mut conn)
    .await?;
    let total = stale_running + stale_canceling + stale_pending;
    if total > 0 {
        tracing::warn!(stale_running, stale_canceling, stale_pending, "reaped stale jobs");
    }
    Ok(total)
}

/// `now - duration`, saturating (an absurd timeout reaps nothing rather than panicking).
fn before(now: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(duration)
        .ok()
        .and_then(|delta| now.checked_sub_signed(delta))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}
