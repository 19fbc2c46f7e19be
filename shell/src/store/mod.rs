//! The store: the only module that writes SQL. One submodule per loop loads that loop's
//! snapshot and applies the core's decisions; nothing here decides anything.

/// The one SQL definition of the builds that are not ready: those with an agent in any state
/// but `ready` (a build without agents is ready). Every query that asks whether a prebuild is
/// ready uses it (with `concat!`); the core adds the rest of "claimable" (rules §4).
macro_rules! unready_builds {
    () => {
        "(SELECT DISTINCT build_id FROM workspace_agents WHERE lifecycle_state <> 'ready')"
    };
}

pub mod agents;
pub mod audit;
pub mod auth;
mod batcher;
pub mod claim;
pub mod completion;
mod convert;
pub mod dashboard_sessions;
pub mod delivery;
pub mod jobs;
pub mod leases;
pub mod lifecycle;
pub mod metrics;
pub mod notifications;
pub mod pool_board;
pub mod pool_samples;
pub mod pools;
pub mod prebuilds;
pub mod publish;
pub mod retention;
pub mod settings;
pub mod template_views;
pub mod templates;
pub mod tokens;
pub mod users;
pub mod workspace_page;
pub mod workspace_story;
pub mod workspaces;

mod error;
mod rows;

pub use error::StoreError;
