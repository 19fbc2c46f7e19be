//! The store: the only module that writes SQL. One submodule per loop loads that loop's
//! snapshot and applies the core's decisions; nothing here decides anything.

pub mod agents;
pub mod audit;
pub mod auth;
pub mod claim;
pub mod jobs;
pub mod leases;
pub mod lifecycle;
pub mod metrics;
pub mod notifications;
pub mod prebuilds;
pub mod publish;
pub mod retention;
pub mod settings;
pub mod templates;
pub mod workspaces;

mod error;
mod rows;

pub use error::StoreError;
