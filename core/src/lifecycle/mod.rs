//! Lifecycle decisions (SPEC §2): one decision per workspace per tick.

mod decision;
mod snapshot;

pub use decision::{Decision, MarkDormant, Reason};
pub use snapshot::{
    AutomaticUpdates, LatestBuild, LifecycleSnapshot, OwnerStatus, Template, Workspace,
};

use chrono::{DateTime, Utc};

/// Decides for every workspace of the snapshot, in input order.
pub fn plan(_now: DateTime<Utc>, _snapshot: &LifecycleSnapshot) -> Vec<Decision> {
    Vec::new()
}
