//! The lifecycle executor's side of the store: load the candidate workspaces (rules §2
//! inputs), apply one decision per workspace.

mod apply;
mod load;

pub use apply::{apply_lifecycle_decision, Applied};
pub use load::{load_lifecycle_candidate, load_lifecycle_snapshot};
