//! The HTTP API through real HTTP against a real PostgreSQL: routes, RBAC, hostile input, the audit log, the access log and the metrics.
//! One test binary per area (cargo links each binary once).

#[path = "../support/api_server.rs"]
mod api_server;

mod admin;
mod agents;
mod audit_log;
mod dashboard;
mod hostile_input;
mod http;
mod http_access_log;
mod metrics_scrape;
mod notifications_delivery;
mod openapi;
mod rbac;
mod workspaces_page;
