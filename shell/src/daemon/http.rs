//! The daemon's small HTTP surface: liveness, readiness (the database answered the last
//! cycle) and Prometheus metrics. The API's router merges into [`base_router`].

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::telemetry::Metrics;

/// Shared between the loops (which set readiness) and the HTTP handlers.
#[derive(Clone, Default)]
pub struct HttpState {
    /// The database answered the last cycle.
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    /// Supervised tasks that died and have not run again yet.
    down: Arc<Mutex<BTreeSet<&'static str>>>,
}

impl HttpState {
    /// A state exporting `metrics`.
    pub fn with_metrics(metrics: Arc<Metrics>) -> Self {
        Self { metrics, ..Self::default() }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Marks a supervised task dead (`/readyz` names it) or running again.
    pub fn set_task_down(&self, task: &'static str, down: bool) {
        let mut tasks = self.down.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if down {
            tasks.insert(task);
        } else {
            tasks.remove(task);
        }
    }

    /// The supervised tasks that are down, by name.
    pub fn tasks_down(&self) -> Vec<&'static str> {
        let tasks = self.down.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        tasks.iter().copied().collect()
    }
}

/// `/healthz`, `/readyz`, `/metrics`.
pub fn base_router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    let down = state.tasks_down();
    if !down.is_empty() {
        (StatusCode::SERVICE_UNAVAILABLE, format!("task down: {}", down.join(", ")))
    } else if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable".to_owned())
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
}
