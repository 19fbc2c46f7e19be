//! The HTTP API (axum, JSON, bearer tokens). Handlers parse and authorize; the store does
//! the work. The route table below builds both the router and the OpenAPI document from the
//! handlers' annotations, so the document cannot miss a route or drift from the types.

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
mod tokens;
mod users;
mod workspaces;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodFilter, MethodRouter};
use axum::Router;

pub use audit::AuditJson;
pub use auth::{Caller, WorkspaceAction};
pub use error::{ApiError, ErrorBody};
pub use openapi::{openapi, openapi_document};
pub use tokens::ApiTokenJson;
pub use users::UserJson;
pub use workspaces::WorkspaceJson;

use crate::db::DbPool;
use crate::store::auth::Authenticator;
use crate::store::claim::ClaimBatcher;
use crate::store::templates::TemplateFinder;
use crate::telemetry::metrics::Metrics;

/// Largest accepted request body (a templates file is the biggest legitimate one).
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;

/// What every handler needs.
#[derive(Clone)]
pub struct ApiState {
    pub pool: DbPool,
    /// Claims go through here: those that arrive together are handed over together.
    pub claims: ClaimBatcher,
    /// Bearer tokens are looked up here: those that arrive together, in one statement.
    pub tokens: Authenticator,
    /// Templates named by requests are resolved here, likewise.
    pub templates: TemplateFinder,
    /// Where handlers observe their figures (claim duration); none in tests that do not care.
    pub metrics: Option<Arc<Metrics>>,
}

impl ApiState {
    pub fn new(pool: DbPool) -> Self {
        Self {
            claims: ClaimBatcher::new(pool.clone()),
            tokens: Authenticator::new(pool.clone()),
            templates: TemplateFinder::new(pool.clone()),
            pool,
            metrics: None,
        }
    }

    /// The same state, observing into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        metrics.watch_claims(self.claims.clone());
        self.metrics = Some(metrics);
        self
    }
}

/// One route of the API. Its method, path, parameters, request and response types and
/// status codes are declared once, by the handler's `#[utoipa::path(...)]` annotation; the
/// router and the OpenAPI document are both built from that, so they cannot disagree.
pub struct Route {
    /// Lower case: `get`, `post`, `put`, `delete`.
    pub method: &'static str,
    http_method: utoipa::openapi::path::HttpMethod,
    /// Axum syntax (`/api/v1/workspaces/{id}`), which is also OpenAPI's.
    pub path: String,
    filter: MethodFilter,
    handler: fn(MethodFilter) -> MethodRouter<ApiState>,
    /// The operation of the OpenAPI document.
    pub operation: fn() -> utoipa::openapi::path::Operation,
    /// Adds the schemas the operation refers to.
    pub schemas: fn(&mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>),
}

/// The route of handler `P` (the `__path_<handler>` type `#[utoipa::path]` generates), served
/// by `handler` (`|m| on(m, the_handler)`: the method filter comes from the annotation).
fn route<P>(handler: fn(MethodFilter) -> MethodRouter<ApiState>) -> Route
where
    // `SchemaReferences` is how utoipa itself (and its axum integration) collects the schemas
    // of a path's bodies.
    P: utoipa::Path + utoipa::__dev::SchemaReferences,
{
    use utoipa::openapi::path::HttpMethod;
    // An annotation always names a method; GET stands in for none.
    let annotated = P::methods().first().cloned().unwrap_or(HttpMethod::Get);
    let (method, filter) = match annotated {
        HttpMethod::Get => ("get", MethodFilter::GET),
        HttpMethod::Post => ("post", MethodFilter::POST),
        HttpMethod::Put => ("put", MethodFilter::PUT),
        HttpMethod::Delete => ("delete", MethodFilter::DELETE),
        HttpMethod::Patch => ("patch", MethodFilter::PATCH),
        HttpMethod::Head => ("head", MethodFilter::HEAD),
        HttpMethod::Options => ("options", MethodFilter::OPTIONS),
        HttpMethod::Trace => ("trace", MethodFilter::TRACE),
    };
    Route {
        method,
        http_method: annotated,
        path: P::path(),
        filter,
        handler,
        operation: P::operation,
        schemas: <P as utoipa::__dev::SchemaReferences>::schemas,
    }
}

/// Every route of the API, under `/api/v1`. To add one: annotate the handler with
/// `#[utoipa::path(...)]` and add its line here.
pub fn routes() -> Vec<Route> {
    use axum::routing::on;
    vec![
        route::<workspaces::__path_create>(|m| on(m, workspaces::create)),
        route::<workspaces::__path_list>(|m| on(m, workspaces::list)),
        route::<workspaces::__path_get>(|m| on(m, workspaces::get)),
        route::<workspaces::__path_start>(|m| on(m, workspaces::start)),
        route::<workspaces::__path_stop>(|m| on(m, workspaces::stop)),
        route::<workspaces::__path_delete>(|m| on(m, workspaces::delete)),
        route::<workspaces::__path_set_autostart>(|m| on(m, workspaces::set_autostart)),
        route::<workspaces::__path_set_ttl>(|m| on(m, workspaces::set_ttl)),
        route::<workspaces::__path_activity>(|m| on(m, workspaces::activity)),
        route::<agents::__path_token>(|m| on(m, agents::token)),
        route::<agents::__path_lifecycle>(|m| on(m, agents::lifecycle)),
        route::<prebuilds::__path_status>(|m| on(m, prebuilds::status)),
        route::<prebuilds::__path_put_settings>(|m| on(m, prebuilds::put_settings)),
        route::<prebuilds::__path_invalidate>(|m| on(m, prebuilds::invalidate)),
        route::<templates::__path_list>(|m| on(m, templates::list)),
        route::<templates::__path_show>(|m| on(m, templates::show)),
        route::<templates::__path_put>(|m| on(m, templates::put)),
        route::<users::__path_list>(|m| on(m, users::list)),
        route::<users::__path_suspend>(|m| on(m, users::suspend)),
        route::<users::__path_activate>(|m| on(m, users::activate)),
        route::<users::__path_put_quiet_hours>(|m| on(m, users::put_quiet_hours)),
        route::<tokens::__path_list>(|m| on(m, tokens::list)),
        route::<tokens::__path_revoke>(|m| on(m, tokens::revoke)),
        route::<audit::__path_list_entries>(|m| on(m, audit::list_entries)),
        route::<notification_preferences::__path_get>(|m| on(m, notification_preferences::get)),
        route::<notification_preferences::__path_put>(|m| on(m, notification_preferences::put)),
        route::<openapi::__path_serve>(|m| on(m, openapi::serve)),
        route::<__path_buildinfo>(|m| on(m, buildinfo)),
    ]
}

/// What `GET /api/v1/buildinfo` answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct BuildInfo {
    /// The server's version.
    pub version: String,
}

/// The server's version: what a client or an operator checks first, so it needs no token.
#[utoipa::path(get, path = "/api/v1/buildinfo", tag = "meta", security(()),
    responses((status = 200, description = "The version", body = BuildInfo)))]
async fn buildinfo() -> axum::Json<BuildInfo> {
    axum::Json(BuildInfo { version: crate::VERSION.to_owned() })
}

/// The API's router; merge it into the daemon's HTTP server.
pub fn router(state: ApiState) -> Router {
    let mut router: Router<ApiState> = Router::new();
    for route in routes() {
        // Same path, other method: axum merges the method routers.
        router = router.route(&route.path, (route.handler)(route.filter));
    }
    router.layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES)).with_state(state)
}
