//! The prebuild reconciler's side of the store: load the snapshot (rules §4 inputs), apply a
//! preset's plan.

mod apply;
mod claims;
mod load;

pub use apply::apply_preset_plan;
pub use load::{load_prebuild_snapshot, LoadedPrebuilds, PresetNames};
