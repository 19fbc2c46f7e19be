//! Poolkeeper's imperative shell: it loads snapshots from PostgreSQL, calls the pure core
//! (`poolkeeper-core`) and carries out its decisions.

pub mod api;
pub mod cli;
pub mod daemon;
pub mod dashboard;
pub mod db;
pub mod demo;
pub mod notify;
pub mod provisioner;
pub mod store;
pub mod telemetry;
pub mod templates_file;

/// This build's version (the crate's), in `poolkeeper_build_info` and `GET /api/v1/buildinfo`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
