//! The LISTEN side of the worker: a connection of its own, taken out of the pool, that turns
//! NOTIFYs on the job channel into wake-ups. Reconnects with backoff; the worker's periodic
//! poll covers whatever is missed meanwhile.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::pooled_connection::deadpool::Object;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use tokio::sync::{broadcast, watch, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::ProvisionerError;
use crate::db::{DbPool, JOB_CHANNEL};

const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the listener tells the worker.
#[derive(Clone)]
pub(crate) struct Wakeups {
    /// Something may be pending: look for work.
    pub work: Arc<Notify>,
    /// The job ids announced (a running job's worker checks for cancellation at once).
    pub jobs: broadcast::Sender<Uuid>,
    /// True once LISTEN has been registered (the worker polls only after that).
    pub listening: Arc<watch::Sender<bool>>,
}

impl Wakeups {
    pub fn new() -> Self {
        Self {
            work: Arc::new(Notify::new()),
            jobs: broadcast::channel(256).0,
            listening: Arc::new(watch::channel(false).0),
        }
    }
}

async fn connect(pool: &DbPool) -> Result<AsyncPgConnection, ProvisionerError> {
    // Out of the pool for good: a LISTEN connection must not be handed to anyone else.
    let mut conn = Object::take(pool.get().await?);
    diesel::sql_query(format!("LISTEN {JOB_CHANNEL}")).execute(&mut conn).await?;
    Ok(conn)
}

pub(crate) async fn listen(
    pool: DbPool,
    wakeups: Wakeups,
    worker: String,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(250);
    while !shutdown.is_cancelled() {
        match connect(&pool).await {
            Ok(mut conn) => {
                backoff = Duration::from_millis(250);
                tracing::debug!(%worker, channel = JOB_CHANNEL, "listening");
                wakeups.listening.send_replace(true);
                // Notifications may have been missed while disconnected.
                wakeups.work.notify_one();
                let mut stream = std::pin::pin!(conn.notifications_stream());
                loop {
                    let item = tokio::select! {
                        () = shutdown.cancelled() => return,
                        item = stream.next() => item,
                    };
                    match item {
                        Some(Ok(notification)) => {
                            wakeups.work.notify_one();
                            if let Ok(job_id) = notification.payload.parse::<Uuid>() {
                                // No receiver (no running job) is fine.
                                let _ = wakeups.jobs.send(job_id);
                            }
                        }
                        Some(Err(err)) => {
                            tracing::warn!(%worker, error = %err, "LISTEN connection failed");
                            break;
                        }
                        None => {
                            tracing::warn!(%worker, "LISTEN connection closed");
                            break;
                        }
                    }
                }
            }
            Err(err) => {
                tracing::warn!(%worker, error = %err, label = err.label(),
                    backoff_ms = backoff.as_millis() as u64, "cannot LISTEN; retrying");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
