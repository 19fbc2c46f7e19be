//! The worker loop: woken by NOTIFY on the job channel and by a backup poll, it takes one job
//! at a time, runs it with a heartbeat beside it, and writes the completion. Database errors
//! are logged and retried with backoff; the loop only ends at shutdown.

use std::time::Duration;

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::agents::mark_agents_ready;
use super::backend::{Backends, BuildFailure};
use super::complete::{complete_job, Completion, JobResult};
use super::context::load_context;
use super::listener::{listen, Wakeups};
use super::{acquire_next_job, flip_due_agents, heartbeat, BackendError, ProvisionerError};
use crate::db::enums::JobStatus;
use crate::db::schema::provisioner_jobs;
use crate::db::DbPool;

const MAX_BACKOFF: Duration = Duration::from_secs(30);
const COMPLETION_ATTEMPTS: u32 = 6;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Recorded on acquired jobs (`provisioner_jobs.worker_id`).
    pub worker_id: String,
    /// Backup poll, in case a notification is lost.
    pub poll_interval: Duration,
    /// How often a running job's heartbeat is written (and cancellation checked).
    pub heartbeat_interval: Duration,
    pub backends: Backends,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            worker_id: format!("provisioner-{}", Uuid::new_v4()),
            poll_interval: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(15),
            backends: Backends::default(),
        }
    }
}

/// Run jobs until `shutdown`. Shutdown stops taking new jobs; a job already running is
/// finished and completed first, so that no build is left half-recorded.
pub async fn run_worker(
    pool: DbPool,
    config: WorkerConfig,
    shutdown: CancellationToken,
) -> Result<(), ProvisionerError> {
    let worker = config.worker_id.clone();
    let wakeups = Wakeups::new();
    let listener_stop = shutdown.child_token();
    let listener =
        tokio::spawn(listen(pool.clone(), wakeups.clone(), worker.clone(), listener_stop.clone()));
    // Register interest before the first poll, so a job announced during it is not missed;
    // if LISTEN cannot be set up, the poll alone still works.
    let mut listening = wakeups.listening.subscribe();
    tokio::select! {
        () = shutdown.cancelled() => {}
        _ = listening.wait_for(|ready| *ready) => {}
        () = tokio::time::sleep(config.poll_interval) => {}
    }
    tracing::info!(%worker, "provisioner worker started");

    let mut backoff = Duration::from_millis(250);
    while !shutdown.is_cancelled() {
        match run_next_job(&pool, &config, &wakeups).await {
            Ok(true) => {
                backoff = Duration::from_millis(250);
                continue;
            }
            Ok(false) => {
                backoff = Duration::from_millis(250);
                // Idle: the restart-safe sweep of simulated agents (the in-memory timers of
                // `schedule_agents` are usually faster).
                sweep_agents(&pool, &config).await;
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = wakeups.work.notified() => {}
                    () = tokio::time::sleep(config.poll_interval) => {}
                }
            }
            Err(err) => {
                tracing::error!(%worker, error = %err, label = err.label(),
                    backoff_ms = backoff.as_millis() as u64, "provisioner cycle failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    listener_stop.cancel();
    if let Err(err) = listener.await {
        tracing::warn!(%worker, error = %err, "the LISTEN task ended abnormally");
    }
    tracing::info!(%worker, "provisioner worker stopped");
    Ok(())
}

async fn sweep_agents(pool: &DbPool, config: &WorkerConfig) {
    let swept = async {
        let mut conn = pool.get().await?;
        flip_due_agents(&mut conn, &config.backends.simulated, Utc::now()).await
    };
    match swept.await {
        Ok(0) => {}
        Ok(flipped) => tracing::info!(worker = %config.worker_id, flipped, "agents ready"),
        Err(err) => tracing::warn!(worker = %config.worker_id, error = %err, "agent sweep failed"),
    }
}

/// Take and run one job; `Ok(false)` when the queue is empty.
async fn run_next_job(
    pool: &DbPool,
    config: &WorkerConfig,
    wakeups: &Wakeups,
) -> Result<bool, ProvisionerError> {
    let worker = config.worker_id.as_str();
    // Subscribe before the job is ours: a cancellation announced between acquiring it and
    // starting the backend must still reach the heartbeat task.
    let announcements = wakeups.jobs.subscribe();
    let mut conn = pool.get().await?;
    let Some(job) = acquire_next_job(&mut conn, worker, Utc::now()).await? else {
        return Ok(false);
    };
    let job_id = job.id;
    let span = tracing::info_span!("job", %job_id, %worker, transition = %job.transition);
    async {
        tracing::info!("job acquired");
        let ctx = match load_context(&mut conn, job).await {
            Ok(ctx) => ctx,
            Err(err) => {
                tracing::error!(error = %err, "cannot load the job's build; failing it");
                fail_unrunnable(&mut conn, job_id, worker, &err.to_string()).await?;
                return Ok(true);
            }
        };
        // No connection (let alone a transaction) is held while the backend runs.
        drop(conn);

        let cancel = CancellationToken::new();
        let beating = CancellationToken::new();
        let heartbeats = tokio::spawn(
            keep_alive(
                pool.clone(),
                job_id,
                config.worker_id.clone(),
                config.heartbeat_interval,
                announcements,
                cancel.clone(),
                beating.clone(),
            )
            .in_current_span(),
        );
        let outcome = config.backends.run(&ctx, &cancel).await;
        beating.cancel();
        if let Err(err) = heartbeats.await {
            tracing::warn!(error = %err, "the heartbeat task ended abnormally");
        }
        let result = match outcome {
            Ok(output) => JobResult::Succeeded(output),
            Err(BuildFailure { error: BackendError::Canceled, state }) => {
                JobResult::Canceled { state }
            }
            Err(failure) => {
                tracing::warn!(error = %failure.error, label = failure.error.label(), "build failed");
                JobResult::Failed(failure)
            }
        };
        let completion = complete_with_retry(pool, job_id, worker, result).await?;
        match completion {
            Some(completion) => {
                tracing::info!(status = %completion.status, "job completed");
                schedule_agents(pool, &completion);
            }
            None => tracing::warn!("the job was taken from this worker (reaped?); result dropped"),
        }
        Ok(true)
    }
    .instrument(span)
    .await
}

/// The completion is the job's only record of the build: retry it through a short outage.
/// After that the reaper fails the job (its heartbeat has stopped).
async fn complete_with_retry(
    pool: &DbPool,
    job_id: Uuid,
    worker: &str,
    result: JobResult,
) -> Result<Option<Completion>, ProvisionerError> {
    let mut backoff = Duration::from_millis(250);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let outcome = async {
            let mut conn = pool.get().await?;
            complete_job(&mut conn, job_id, worker, &result, Utc::now()).await
        };
        match outcome.await {
            Ok(completion) => return Ok(completion),
            Err(err) if attempt < COMPLETION_ATTEMPTS => {
                tracing::warn!(error = %err, attempt, "cannot record the completion; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(err) => return Err(err),
        }
    }
}

/// Heartbeat until `done`; cancel `cancel` when the job is being canceled or is no longer ours.
async fn keep_alive(
    pool: DbPool,
    job_id: Uuid,
    worker: String,
    interval: Duration,
    mut announced: broadcast::Receiver<Uuid>,
    cancel: CancellationToken,
    done: CancellationToken,
) {
    loop {
        tokio::select! {
            () = done.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
            received = announced.recv() => match received {
                Ok(id) if id != job_id => continue,
                // Our job, or some announcements were lost: check now.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                // The listener is gone; the timer still drives heartbeats.
                Err(broadcast::error::RecvError::Closed) => {
                    announced = broadcast::channel(1).1;
                }
            },
        }
        let status = async {
            let mut conn = pool.get().await?;
            heartbeat(&mut conn, job_id, &worker, Utc::now()).await
        };
        match status.await {
            Ok(Some(JobStatus::Canceling)) => {
                if !cancel.is_cancelled() {
                    tracing::info!("job canceled; stopping the backend");
                    cancel.cancel();
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::warn!("job no longer held by this worker; stopping the backend");
                cancel.cancel();
            }
            Err(err) => tracing::warn!(error = %err, "heartbeat failed; will retry"),
        }
    }
}

/// A job whose build cannot be read can never run: fail it now rather than after the
/// heartbeat timeout.
async fn fail_unrunnable(
    conn: &mut diesel_async::AsyncPgConnection,
    job_id: Uuid,
    worker: &str,
    error: &str,
) -> Result<(), ProvisionerError> {
    diesel::update(
        provisioner_jobs::table
            .find(job_id)
            .filter(provisioner_jobs::worker_id.eq(worker))
            .filter(provisioner_jobs::status.eq(JobStatus::Running)),
    )
    .set((
        provisioner_jobs::status.eq(JobStatus::Failed),
        provisioner_jobs::completed_at.eq(Utc::now()),
        provisioner_jobs::error.eq(error),
    ))
    .execute(conn)
    .await?;
    Ok(())
}

/// Simulated agents with a start time become ready once it has passed. Kept in memory: after
/// a restart such an agent stays `starting` (the daemon treats that as not ready yet).
fn schedule_agents(pool: &DbPool, completion: &Completion) {
    for &(agent_id, due) in &completion.starting_agents {
        let pool = pool.clone();
        tokio::spawn(
            async move {
                let wait = (due - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                tokio::time::sleep(wait).await;
                let flipped = async {
                    let mut conn = pool.get().await?;
                    mark_agents_ready(&mut conn, &[agent_id], Utc::now()).await.map(|n| n > 0)
                };
                match flipped.await {
                    Ok(true) => tracing::info!(%agent_id, "agent ready"),
                    Ok(false) => {}
                    Err(err) => {
                        tracing::warn!(%agent_id, error = %err, "cannot mark the agent ready")
                    }
                }
            }
            .in_current_span(),
        );
    }
}
