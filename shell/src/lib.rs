//! Poolkeeper's imperative shell: it loads snapshots from PostgreSQL, calls the pure core
//! (`poolkeeper-core`) and carries out its decisions.

pub mod api;
pub mod cli;
pub mod daemon;
pub mod db;
pub mod demo;
pub mod provisioner;
pub mod store;
pub mod telemetry;
pub mod templates_file;
