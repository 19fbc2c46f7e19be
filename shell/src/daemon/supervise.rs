//! Supervision of the daemon's long-running tasks (the loops, the listener, the embedded
//! worker, the HTTP server): a task that panics or returns before shutdown is logged,
//! counted (`poolkeeper_task_restarts_total{task}`), shown by `/readyz` as down, and
//! restarted after a capped exponential backoff; it counts as up again once restarted.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::http::HttpState;
use crate::telemetry::metrics::TaskLabels;

const FIRST_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(30);
/// A task that ran this long before dying starts again from the first delay.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Runs `task()` until `shutdown`, restarting it whenever it dies. `task` builds a fresh
/// future each time (its state is rebuilt from the database, never carried over).
pub fn supervise<F, Fut>(
    name: &'static str,
    state: HttpState,
    shutdown: CancellationToken,
    task: F,
) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut delay = FIRST_DELAY;
        loop {
            let started = tokio::time::Instant::now();
            let outcome = tokio::spawn(task()).await;
            if shutdown.is_cancelled() {
                if let Err(err) = outcome {
                    tracing::error!(task = name, error = %err, "task died during shutdown");
                }
                return;
            }
            match outcome {
                Ok(()) => tracing::error!(task = name, "task exited before shutdown; restarting"),
                Err(err) => tracing::error!(task = name, error = %err, "task died; restarting"),
            }
            state.set_task_down(name, true);
            state.metrics.task_restarts.get_or_create(&TaskLabels { task: name.to_owned() }).inc();
            if started.elapsed() >= HEALTHY_RUN {
                delay = FIRST_DELAY;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(MAX_DELAY);
            state.set_task_down(name, false);
            tracing::info!(task = name, "task restarted");
        }
    })
}
