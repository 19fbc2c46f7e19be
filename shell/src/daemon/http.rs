//! The daemon's small HTTP surface: liveness, readiness (the database answered the last
//! cycle) and Prometheus metrics. The API's router merges into [`base_router`].

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, State};
use axum::http::{header, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

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

/// `router` with an access log: one `http request` line per request with method, matched
/// route (the pattern, not the path: no ids or tokens in the field, bounded cardinality),
/// status, latency and the request id. The id is the caller's `x-request-id`, else a new
/// UUID, and is returned in the response's `x-request-id` so a client can quote it.
pub fn with_access_log(router: Router) -> Router {
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request<Body>| {
            let route = request
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", MatchedPath::as_str)
                .to_owned();
            let request_id = request
                .headers()
                .get("x-request-id")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            tracing::info_span!("http", method = %request.method(), route = %route, request_id = %request_id)
        })
        .on_request(())
        .on_response(|response: &Response<Body>, latency: Duration, _span: &Span| {
            tracing::info!(
                status = response.status().as_u16(),
                latency_ms = latency.as_secs_f64() * 1000.0,
                "http request"
            );
        })
        // Failures are responses too: `on_response` logged them with their status.
        .on_failure(());
    // Last added runs first: the id is set before the trace span reads it.
    router
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(trace)
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
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
