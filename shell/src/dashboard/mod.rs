//! The operators' dashboard: server-rendered HTML pages (maud) on the daemon's own listener,
//! signed in with an API token and kept in a session cookie. Handlers are thin: they read
//! through the store, let the core explain, and render. The pages poll themselves for live
//! updates with a few lines of JavaScript; styles and script are embedded in the binary.

mod assets;
mod chart;
mod error;
mod layout;
mod lifecycle;
mod pools;
mod session;
mod story;

use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::TimeDelta;
use poolkeeper_core::prebuilds::ReconcilerConfig;

pub use error::DashboardError;
pub use session::SESSION_COOKIE;

use crate::db::DbPool;

/// Where the dashboard lives on the daemon's listener.
pub const DASHBOARD_PATH: &str = "/dashboard";

/// What every page needs.
#[derive(Clone)]
pub struct DashboardState {
    pub pool: DbPool,
    /// The reconciler's settings, so that the pools' explanations (backoff, hard limit) are
    /// the ones the daemon's own cycles reach.
    pub reconciler: ReconcilerConfig,
    /// How long a sign-in lasts (never longer than the token pasted).
    pub session_lifetime: TimeDelta,
}

impl DashboardState {
    /// Sessions of 12 hours: a working day, after which the token is pasted again.
    pub fn new(pool: DbPool, reconciler: ReconcilerConfig) -> Self {
        Self { pool, reconciler, session_lifetime: TimeDelta::hours(12) }
    }
}

/// The dashboard's routes; merge them into the daemon's router.
pub fn router(state: DashboardState) -> Router {
    Router::new()
        .route(DASHBOARD_PATH, get(pools::redirect_home))
        .route("/dashboard/sign-in", get(session::sign_in_page).post(session::sign_in))
        .route("/dashboard/sign-out", post(session::sign_out))
        .route("/dashboard/pools", get(pools::page))
        .route("/dashboard/pools/pause", post(pools::pause))
        .route("/dashboard/pools/resume", post(pools::resume))
        .route("/dashboard/presets/{id}/invalidate", post(pools::invalidate))
        .route("/dashboard/lifecycle", get(lifecycle::page))
        .route("/dashboard/workspaces/{id}", get(story::page))
        .route("/dashboard/assets/{name}", get(assets::serve))
        .layer(axum::middleware::map_response(protect))
        .with_state(state)
}

/// Headers on every dashboard answer: nothing but our own script and styles runs, the pages
/// are never framed (clickjacking), cached or sniffed, and no address leaks to another site
/// in a referrer. (`same-origin`, not `no-referrer`: under the latter a browser sends
/// `Origin: null` with our own forms, which the origin check must refuse.)
async fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let fixed = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
