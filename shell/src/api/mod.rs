//! The HTTP API (axum, JSON, bearer tokens). Handlers parse and authorize; the store does
//! the work. The route table below builds both the router and the OpenAPI document, so the
//! document cannot miss a route.

mod agents;
mod audit;
mod auth;
mod body;
mod error;
mod notification_preferences;
mod openapi;
mod path;
mod prebuilds;
mod templates;
mod workspaces;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;

pub use auth::{Caller, WorkspaceAction};
pub use error::ApiError;
pub use openapi::openapi_document;

use crate::db::DbPool;
use crate::telemetry::metrics::Metrics;

/// Largest accepted request body (a templates file is the biggest legitimate one).
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;

/// What every handler needs.
#[derive(Clone)]
pub struct ApiState {
    pub pool: DbPool,
    /// Where handlers observe their figures (claim duration); none in tests that do not care.
    pub metrics: Option<Arc<Metrics>>,
}

impl ApiState {
    pub fn new(pool: DbPool) -> Self {
        Self { pool, metrics: None }
    }

    /// The same state, observing into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

/// One route: method, path (axum syntax), summary, and who may call it.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub handler: fn() -> MethodRouter<ApiState>,
}

/// Every route of the API, under `/api/v1`.
pub fn routes() -> Vec<Route> {
    fn r(
        method: &'static str,
        path: &'static str,
        summary: &'static str,
        handler: fn() -> MethodRouter<ApiState>,
    ) -> Route {
        Route { method, path, summary, handler }
    }
    vec![
        r(
            "post",
            "/api/v1/workspaces",
            "Create a workspace: claim a ready prebuild of the preset, or build a fresh one",
            || post(workspaces::create),
        ),
        r(
            "get",
            "/api/v1/workspaces",
            "List the caller's workspaces (every workspace for owners)",
            || get(workspaces::list),
        ),
        r("get", "/api/v1/workspaces/{id}", "Get a workspace", || get(workspaces::get)),
        r("post", "/api/v1/workspaces/{id}/start", "Start a workspace (a new build)", || {
            post(workspaces::start)
        }),
        r("post", "/api/v1/workspaces/{id}/stop", "Stop a workspace (a new build)", || {
            post(workspaces::stop)
        }),
        r("delete", "/api/v1/workspaces/{id}", "Delete a workspace (a delete build)", || {
            delete(workspaces::delete)
        }),
        r(
            "put",
            "/api/v1/workspaces/{id}/autostart",
            "Set or clear the autostart schedule",
            || put(workspaces::set_autostart),
        ),
        r("put", "/api/v1/workspaces/{id}/ttl", "Set the TTL (seconds, 0 = none)", || {
            put(workspaces::set_ttl)
        }),
        r(
            "post",
            "/api/v1/workspaces/{id}/activity",
            "Report activity (bumps last_used_at)",
            || post(workspaces::activity),
        ),
        r(
            "post",
            "/api/v1/workspaces/{id}/agents/{agent}/token",
            "Mint a new token for an agent of the latest build (shown once; the old one stops working)",
            || post(agents::token),
        ),
        r(
            "post",
            "/api/v1/workspaces/{id}/agents/{agent}/lifecycle",
            "Report an agent's lifecycle state {state} (agent token auth)",
            || post(agents::lifecycle),
        ),
        r(
            "get",
            "/api/v1/prebuilds/status",
            "Prebuild pools of active template versions, and whether reconciliation is paused",
            || get(prebuilds::status),
        ),
        r(
            "put",
            "/api/v1/prebuilds/settings",
            "Pause or resume prebuild reconciliation (owners)",
            || put(prebuilds::put_settings),
        ),
        r(
            "post",
            "/api/v1/presets/{id}/invalidate",
            "Expire every existing prebuild of a preset (owners, template admins)",
            || post(prebuilds::invalidate),
        ),
        r(
            "put",
            "/api/v1/templates/{org}/{name}",
            "Apply a templates file, TOML or JSON (owners, template admins)",
            || put(templates::put),
        ),
        r(
            "get",
            "/api/v1/audit",
            "The audit log, newest first; filters: resource_type, resource_id, actor, action, since, limit (owners)",
            || get(audit::list_entries),
        ),
        r(
            "get",
            "/api/v1/users/me/notification-preferences",
            "The notification kinds the caller receives",
            || get(notification_preferences::get),
        ),
        r(
            "put",
            "/api/v1/users/me/notification-preferences",
            "Switch notification kinds on or off for the caller: {\"preferences\": {kind: bool}}",
            || put(notification_preferences::put),
        ),
        r("get", "/api/v1/openapi.json", "This document", || get(openapi::serve)),
        r("get", "/api/v1/buildinfo", "The server's version (public)", || get(buildinfo)),
    ]
}

/// `{"version": "..."}`: what a client or an operator checks first, so it needs no token.
async fn buildinfo() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "version": crate::VERSION }))
}

/// The API's router; merge it into the daemon's HTTP server.
pub fn router(state: ApiState) -> Router {
    let mut router: Router<ApiState> = Router::new();
    for route in routes() {
        // Same path, other method: axum merges the method routers.
        router = router.route(route.path, (route.handler)());
    }
    router.layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES)).with_state(state)
}
