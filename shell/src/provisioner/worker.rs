//! The worker loop: woken by NOTIFY on the job channel and by a backup poll, it takes one job
//! at a time, runs it with a heartbeat beside it, and writes the completion. Database errors
//! are logged and retried with backoff; the loop only ends at shutdown.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::agents::mark_agents_ready;
use super::backend::{Backends, BuildFailure};
use super::complete::{
    complete_job, end_taken_job, Acquired, AsTaken, Completion, JobResult, NextJob,
};
use super::context::{load_context, JobContext};
use super::listener::{listen, Wakeups};
use super::spool::{self, Journal, Spooled};
use super::{
    acquire_next_job_with_context, flip_due_agents, heartbeat, BackendError, ProvisionerError,
};
use crate::db::enums::JobStatus;
use crate::db::models::ProvisionerJob;
use crate::db::{DbConn, DbPool};

const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Reading a job's build is retried through this many transient database errors (about half
/// a minute of backoff); after that the job is left to the reaper, which fails it as lost
/// rather than as a failed build.
const LOAD_ATTEMPTS: u32 = 8;
/// A completion that could not be spooled is retried this often even after shutdown was
/// asked for: it is then the only copy of the build's result.
const UNSPOOLED_ATTEMPTS_AFTER_SHUTDOWN: u32 = 6;
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// Bound on one heartbeat's database round trip (at least this, or the interval).
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);
/// A build that ends within this is completed on the connection that took its job, without
/// the pool's liveness check; a longer build gives that connection back to the pool once it
/// has run this long, and its completion checks one out (a connection idle for the length of
/// a build may have been dropped by the server or a proxy on the way).
const KEEP_CONNECTION_FOR: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Recorded on acquired jobs (`provisioner_jobs.worker_id`).
    pub worker_id: String,
    /// Backup poll, in case a notification is lost.
    pub poll_interval: Duration,
    /// How often a running job's heartbeat is written (and cancellation checked).
    pub heartbeat_interval: Duration,
    pub backends: Backends,
    /// rules §7: this worker takes only jobs whose tags these cover (none: untagged jobs).
    pub tags: poolkeeper_core::tags::Tags,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            worker_id: format!("provisioner-{}", Uuid::new_v4()),
            poll_interval: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(15),
            backends: Backends::default(),
            tags: poolkeeper_core::tags::Tags::new(),
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
    // Results of builds that ended while the database was unreachable, by this worker or
    // one that ran before it on the same work directory.
    save_spooled(&pool, &config, &shutdown).await;

    let mut backoff = Duration::from_millis(250);
    // The connection that saved the last completion takes the next job, in the same round
    // trip as that completion: while the queue has work, a job costs one pool checkout (and
    // its liveness check) and two waits for the server, not two and four.
    let mut held: Option<DbConn> = None;
    let mut prefetched: Option<Prefetched> = None;
    let mut journal = Journal::new(&spool::dir(&config.backends.terraform.work_dir), &worker);
    // A job taken with the last completion is run even when shutdown came meanwhile.
    while !shutdown.is_cancelled() || prefetched.is_some() {
        let kept = Kept { held: &mut held, prefetched: &mut prefetched, journal: &mut journal };
        match run_next_job(&pool, &config, &wakeups, &shutdown, kept).await {
            Ok(true) => {
                backoff = Duration::from_millis(250);
                continue;
            }
            Ok(false) if shutdown.is_cancelled() => break,
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

/// The next job, taken in the same round trip as the previous job's completion.
struct Prefetched {
    /// Subscribed before the acquisition was sent (see [`run_next_job`]).
    announcements: broadcast::Receiver<Uuid>,
    /// The acquisition's instant, by which a job whose reply was lost is found.
    now: DateTime<Utc>,
    acquired: Acquired,
}

/// What a worker keeps from one job to the next.
struct Kept<'a> {
    /// The connection that saved the last completion (taken by the next job, and left there
    /// by a saved completion); none while the queue is empty or after an error.
    held: &'a mut Option<DbConn>,
    /// The job taken with that completion, if it took one (taken by the next job, and left
    /// there by the completion).
    prefetched: &'a mut Option<Prefetched>,
    /// Where results wait until they are saved.
    journal: &'a mut Journal,
}

/// Take and run one job; `Ok(false)` when the queue is empty.
async fn run_next_job(
    pool: &DbPool,
    config: &WorkerConfig,
    wakeups: &Wakeups,
    shutdown: &CancellationToken,
    Kept { held, prefetched, journal }: Kept<'_>,
) -> Result<bool, ProvisionerError> {
    let worker = config.worker_id.as_str();
    let (announcements, now, acquired, conn) = match prefetched.take() {
        Some(Prefetched { announcements, now, acquired }) => {
            (announcements, now, acquired, held.take())
        }
        None => {
            // Subscribe before the job is ours: a cancellation announced between acquiring
            // it and starting the backend must still reach the heartbeat task.
            let announcements = wakeups.jobs.subscribe();
            let conn = match held.take() {
                Some(conn) => conn,
                None => pool.get().await?,
            };
            let now = Utc::now();
            let acquired = acquire_next_job_with_context(&conn, worker, &config.tags, now).await;
            (announcements, now, acquired, Some(conn))
        }
    };
    let (conn, job, read) = match acquired {
        Ok(Some((job, read))) => (conn, job, read),
        Ok(None) => return Ok(false),
        Err(err) if err.is_transient() => {
            // The acquisition may have committed with its reply lost: its job would stay
            // `running`, built by no one, until the reaper failed it. Look for it.
            drop(conn);
            let mut conn = pool.get().await?;
            let Some(job) = crate::store::jobs::taken_at(&mut conn, worker, now).await? else {
                return Err(err);
            };
            tracing::warn!(job_id = %job.id, error = %err,
                "the acquisition's reply was lost; running the job it took");
            (Some(conn), job, None)
        }
        Err(err) => return Err(err),
    };
    let job_id = job.id;
    let span = tracing::info_span!("job", %job_id, %worker, transition = %job.transition);
    async {
        tracing::info!("job acquired");
        // The job's context was read with its acquisition, or is read now on the connection
        // that took it (with retries). No transaction is held while the backend runs; the
        // connection is kept (idle), and completes the job only after a short build.
        let loaded = match (read, conn) {
            (Some(ctx), Some(conn)) => Some((ctx, conn)),
            (_, conn) => load_with_retry(pool, conn, job, worker, shutdown).await?,
        };
        let Some((ctx, conn)) = loaded else { return Ok(true) };
        let taken = tokio::time::Instant::now();

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
        // A long build gives the connection back as soon as it is known to be long, rather
        // than holding it idle for minutes.
        let build = config.backends.run(&ctx, &cancel);
        tokio::pin!(build);
        let keep_until = taken + KEEP_CONNECTION_FOR;
        let (outcome, conn) = tokio::select! {
            outcome = &mut build => (outcome, Some(conn)),
            () = tokio::time::sleep_until(keep_until) => {
                drop(conn);
                (build.await, None)
            }
        };
        let conn = conn.filter(|_| taken.elapsed() < KEEP_CONNECTION_FOR);
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
        // Spool first: if the database stays unreachable until this worker stops, the next
        // worker on this work directory saves the result.
        let spooled = Spooled::new(job_id, worker, &result);
        let spooled = match journal.record(&spooled).await {
            Ok(()) => true,
            Err(err) => {
                tracing::error!(path = %journal.path().display(), error = %err,
                    "cannot spool the build's result; only memory holds it until it is saved");
                false
            }
        };
        let taken = AsTaken { build: &ctx.build, owner_id: ctx.workspace.owner_id };
        // The next job is taken with this one's completion, unless the worker is stopping;
        // subscribed first, as above.
        let next = (!shutdown.is_cancelled()).then(|| (wakeups.jobs.subscribe(), Utc::now()));
        let (saved, acquired) = complete_with_retry(
            pool,
            conn,
            (job_id, worker, Some(taken)),
            &result,
            (shutdown, spooled.then(|| journal.path())),
            next.as_ref().map(|(_, now)| NextJob { tags: &config.tags, now: *now }),
        )
        .await;
        if let (Some((announcements, now)), Some(acquired)) = (next, acquired) {
            *prefetched = Some(Prefetched { announcements, now, acquired });
        }
        match saved {
            Some((Some(completion), conn)) => {
                tracing::info!(status = %completion.status, "job completed");
                schedule_agents(pool, &completion);
                *held = Some(conn);
            }
            Some((None, conn)) => {
                *held = Some(conn);
                tracing::warn!(
                "the job was ended by someone else (reaped?) while it ran; its result was recorded on it"
                );
            }
            None => {
                tracing::warn!(spooled,
                    "stopping before the completion could be saved; a worker on this work directory saves it at start");
                return Ok(true);
            }
        }
        if spooled {
            journal.saved(job_id).await;
        }
        Ok(true)
    }
    .instrument(span)
    .await
}

/// The job's build, read with retries through transient database errors, first on `conn`
/// (the connection that took the job), then on fresh ones; returned with the connection that
/// read it. `Ok(None)` when the job cannot run (it is failed, with an audit entry) or was
/// left to the reaper.
async fn load_with_retry(
    pool: &DbPool,
    conn: Option<DbConn>,
    job: ProvisionerJob,
    worker: &str,
    shutdown: &CancellationToken,
) -> Result<Option<(JobContext, DbConn)>, ProvisionerError> {
    let job_id = job.id;
    let mut backoff = Duration::from_millis(250);
    let mut attempt = 0;
    let mut first = conn;
    loop {
        attempt += 1;
        let taken = first.take();
        let loaded = async {
            let mut conn = match taken {
                Some(conn) => conn,
                None => pool.get().await?,
            };
            let ctx = load_context(&mut conn, job.clone()).await?;
            Ok::<_, ProvisionerError>((ctx, conn))
        };
        let err = match loaded.await {
            Ok(loaded) => return Ok(Some(loaded)),
            Err(err) => err,
        };
        if !err.is_transient() {
            tracing::error!(error = %err, label = err.label(), "the job cannot run; failing it");
            let mut conn = pool.get().await?;
            let error = err.to_string();
            crate::store::jobs::fail_unrunnable(&mut conn, job_id, worker, &error, Utc::now())
                .await?;
            return Ok(None);
        }
        if attempt >= LOAD_ATTEMPTS || shutdown.is_cancelled() {
            // Not a build failure: the reaper fails the job as lost once its heartbeat is old.
            tracing::error!(error = %err, label = err.label(), attempt,
                "cannot read the job's build; leaving the job to the reaper");
            return Err(err);
        }
        tracing::warn!(error = %err, label = err.label(), attempt,
            backoff_ms = backoff.as_millis() as u64, "cannot read the job's build; retrying");
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The completion is the only record of the build in the database: retry it with backoff
/// until it is saved, first on `conn` (if any), then on connections of the pool; returned
/// with the connection that saved it (the next job is taken on it). `as_taken` is the job as
/// the worker read it when it took it, if it did (not for a spooled result). `None` if
/// shutdown came first and the result is safe in the spool (or a bounded number of further
/// attempts failed too). After a failed attempt the spooled copy (`spooled`, if any) is
/// synced to disk: it may have to outlast a long outage. With `next`, the first attempt also
/// takes the worker's next job (see [`end_taken_job`]), returned whatever became of the
/// completion; `None` when it was not taken.
async fn complete_with_retry(
    pool: &DbPool,
    conn: Option<DbConn>,
    (job_id, worker, as_taken): (Uuid, &str, Option<AsTaken<'_>>),
    result: &JobResult,
    (shutdown, spooled): (&CancellationToken, Option<&std::path::Path>),
    mut next: Option<NextJob<'_>>,
) -> (Option<(Option<Completion>, DbConn)>, Option<Acquired>) {
    let mut backoff = Duration::from_millis(250);
    let mut attempt: u32 = 0;
    let mut after_shutdown: u32 = 0;
    let mut durable = false;
    let mut first = conn;
    let mut acquired = None;
    loop {
        attempt += 1;
        let taken = first.take();
        let outcome = async {
            let mut conn = match taken {
                Some(conn) => conn,
                None => pool.get().await?,
            };
            let completion = match as_taken {
                Some(as_taken) => {
                    let (completion, took) =
                        end_taken_job(&mut conn, as_taken, worker, result, Utc::now(), next.take())
                            .await;
                    acquired = acquired.take().or(took);
                    completion?
                }
                None => complete_job(&mut conn, job_id, worker, result, Utc::now()).await?,
            };
            Ok::<_, ProvisionerError>((completion, conn))
        };
        let err = match outcome.await {
            Ok(saved) => return (Some(saved), acquired),
            Err(err) => err,
        };
        if let (Some(path), false) = (spooled, durable) {
            durable = true;
            if let Err(error) = spool::make_durable(path).await {
                tracing::error!(path = %path.display(), %error,
                    "cannot sync the spooled result; it outlives this worker, not the machine");
            }
        }
        if shutdown.is_cancelled() {
            after_shutdown += 1;
            if spooled.is_some() || after_shutdown >= UNSPOOLED_ATTEMPTS_AFTER_SHUTDOWN {
                tracing::error!(error = %err, attempt, spooled = spooled.is_some(),
                    "shutting down before the completion was saved");
                return (None, acquired);
            }
        }
        tracing::warn!(error = %err, label = err.label(), attempt,
            backoff_ms = backoff.as_millis() as u64, "cannot record the completion; retrying");
        tokio::select! {
            () = shutdown.cancelled(), if !shutdown.is_cancelled() => {}
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Save the results a worker spooled but could not write (see [`spool`]).
async fn save_spooled(pool: &DbPool, config: &WorkerConfig, shutdown: &CancellationToken) {
    let dir = spool::dir(&config.backends.terraform.work_dir);
    let pending = match spool::pending(&dir).await {
        Ok(pending) => pending,
        Err(err) => {
            tracing::error!(dir = %dir.display(), error = %err, "cannot read the spool");
            return;
        }
    };
    for file in pending {
        let path = file.path;
        let mut all_saved = !file.damaged;
        for spooled in file.unsaved {
            all_saved &= save_one_spooled(pool, shutdown, &path, spooled).await;
        }
        if all_saved {
            spool::remove(&path).await;
        }
    }
}

/// Saves one spooled result found in the spool file `path`; whether it was saved.
async fn save_one_spooled(
    pool: &DbPool,
    shutdown: &CancellationToken,
    path: &std::path::Path,
    spooled: Spooled,
) -> bool {
    let Some(result) = spooled.result() else {
        tracing::error!(path = %path.display(), job_id = %spooled.job_id,
            "damaged spooled result; left in place");
        return false;
    };
    let job_id = spooled.job_id;
    let worker = spooled.worker_id.as_str();
    let span = tracing::info_span!("spooled_job", %job_id, %worker);
    let (saved, _) = complete_with_retry(
        pool,
        None,
        (job_id, worker, None),
        &result,
        (shutdown, Some(path)),
        None,
    )
    .instrument(span.clone())
    .await;
    if let Some((completion, _conn)) = saved {
        span.in_scope(|| {
            tracing::info!(status = ?completion.as_ref().map(|c| c.status),
                "saved a spooled result")
        });
        if let Some(completion) = completion {
            schedule_agents(pool, &completion);
        }
        return true;
    }
    false
}

/// Heartbeat at a fixed rate until `done`; cancel `cancel` when the job is being canceled or
/// is no longer ours. Announcements of this job add a check at once; nothing delays a beat.
async fn keep_alive(
    pool: DbPool,
    job_id: Uuid,
    worker: String,
    interval: Duration,
    mut announced: broadcast::Receiver<Uuid>,
    cancel: CancellationToken,
    done: CancellationToken,
) {
    // A zero interval (from configuration) would make the timer panic; beat often instead.
    let interval = interval.max(MIN_HEARTBEAT_INTERVAL);
    let mut beats = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    // A slow beat is followed by the next one a full interval later, not by a burst.
    beats.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut listening = true;
    loop {
        tokio::select! {
            () = done.cancelled() => return,
            _ = beats.tick() => {}
            received = announced.recv(), if listening => match received {
                Ok(id) if id != job_id => continue,
                // Our job, or some announcements were lost: check now.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                // The listener is gone; the timer alone drives heartbeats.
                Err(broadcast::error::RecvError::Closed) => {
                    listening = false;
                    continue;
                }
            },
        }
        let status = async {
            let mut conn = pool.get().await?;
            heartbeat(&mut conn, job_id, &worker).await
        };
        match tokio::time::timeout(interval.max(HEARTBEAT_TIMEOUT), status).await {
            Ok(Ok(Some(JobStatus::Canceling))) => {
                if !cancel.is_cancelled() {
                    tracing::info!("job canceled; stopping the backend");
                    cancel.cancel();
                }
            }
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => {
                if !cancel.is_cancelled() {
                    tracing::warn!("job no longer held by this worker; stopping the backend");
                    cancel.cancel();
                }
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, label = err.label(), "heartbeat failed; will retry")
            }
            Err(_) => tracing::warn!("heartbeat timed out; will retry"),
        }
    }
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
