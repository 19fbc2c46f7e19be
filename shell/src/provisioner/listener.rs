//! The LISTEN side of the worker: a connection of its own, taken out of the pool, that turns
//! NOTIFYs on the job channel into wake-ups (the loop is `db::listen::listen_loop`). The
//! worker's periodic poll covers whatever is missed while it reconnects.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::pooled_connection::deadpool::Object;
use diesel_async::AsyncPgConnection;
use tokio::sync::{broadcast, watch, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::ProvisionerError;
use crate::db::listen::{listen_loop, Backoff};
use crate::db::{DbPool, JOB_CHANNEL};

const BACKOFF: Backoff =
    Backoff { first: Duration::from_millis(250), max: Duration::from_secs(30) };

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
    Ok(Object::take(pool.get().await?))
}

pub(crate) async fn listen(
    pool: DbPool,
    wakeups: Wakeups,
    worker: String,
    shutdown: CancellationToken,
) {
    tracing::debug!(%worker, channel = JOB_CHANNEL, "job listener starting");
    listen_loop(
        JOB_CHANNEL,
        || connect(&pool),
        || {
            wakeups.listening.send_replace(true);
            // Notifications may have been missed while disconnected.
            wakeups.work.notify_one();
        },
        |payload| {
            wakeups.work.notify_one();
            if let Ok(job_id) = payload.parse::<Uuid>() {
                // No receiver (no running job) is fine.
                let _ = wakeups.jobs.send(job_id);
            }
        },
        BACKOFF,
        shutdown,
    )
    .await;
}
