//! The lifecycle executor's side of the store: load the candidate workspaces (rules §2
//! inputs), apply decisions in batches or one workspace at a time.

mod apply;
mod load;
mod write;

pub use apply::{
    apply_lifecycle_batch, apply_lifecycle_decision, apply_lifecycle_workspace, Applied,
    BatchApplied,
};
pub use load::{load_lifecycle_candidate, load_lifecycle_snapshot};
