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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// Waits (bounded) for `condition`.
    async fn until(mut condition: impl FnMut() -> bool) {
        for _ in 0..400 {
            if condition() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("condition never met");
    }

    #[tokio::test]
    async fn a_task_that_panics_is_counted_shown_down_and_restarted() {
        let state = HttpState::default();
        let shutdown = CancellationToken::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let (counted, stop) = (runs.clone(), shutdown.clone());
        let handle = supervise("flaky", state.clone(), shutdown.clone(), move || {
            let (runs, stop) = (counted.clone(), stop.clone());
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("first run dies");
                }
                stop.cancelled().await;
            }
        });
        until(|| state.tasks_down() == ["flaky"]).await;
        assert!(state
            .metrics
            .encode()
            .contains("poolkeeper_task_restarts_total{task=\"flaky\"} 1"));
        until(|| runs.load(Ordering::SeqCst) == 2).await;
        assert!(state.tasks_down().is_empty(), "still shown down after the restart");
        shutdown.cancel();
        handle.await.expect("supervisor");
        assert_eq!(runs.load(Ordering::SeqCst), 2, "restarted after shutdown");
    }

    #[tokio::test]
    async fn a_task_that_returns_before_shutdown_is_restarted_and_one_that_returns_after_is_not() {
        let state = HttpState::default();
        let shutdown = CancellationToken::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let handle = supervise("short", state.clone(), shutdown.clone(), move || {
            let runs = counted.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
            }
        });
        until(|| runs.load(Ordering::SeqCst) >= 2).await;
        shutdown.cancel();
        handle.await.expect("supervisor");
        assert!(state.metrics.encode().contains("poolkeeper_task_restarts_total{task=\"short\"}"));
    }
}
