//! The prebuild reconciler's side of the store: load the snapshot (rules §4 inputs), keep it
//! up to date from the change feed (rules §8), apply a preset's plan.

mod apply;
mod claims;
mod create;
mod feed;
mod kept;
mod load;
mod rows;

pub use apply::apply_preset_plan;
pub use create::{create_prebuilds, CreateBatch, Creates, CREATES_PER_TRANSACTION};
pub use feed::{PrebuildFeed, Refreshed};
pub use kept::KeptSnapshot;
pub use load::{load_prebuild_snapshot, LoadedPrebuilds, PresetNames};
