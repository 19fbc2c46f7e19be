//! The daemon: the lifecycle loop and the prebuild loop, their leadership, pause,
//! wake-ups, backoff on database loss, graceful shutdown, and the HTTP health surface.
//!
//! Leadership is an expiring lease per loop, renewed every cycle (see `leader.rs` for why
//! not an advisory lock); every write made under it is fenced by the lease's token. Every
//! replica runs both loops; only the lease holder's cycles do anything. Every long-running
//! task is supervised (`supervise.rs`).

pub mod error;
pub mod http;
pub mod leader;
pub mod lifecycle;
mod listen;
pub mod plans;
mod pool_metrics;
pub mod prebuilds;
pub mod recorder;
pub mod retention;
mod run;
pub mod supervise;

pub use error::DaemonError;
pub use lifecycle::{LifecycleExecutor, TickStats};
pub use plans::KeptPlans;
pub use prebuilds::{CycleOutcome, CycleStats, PrebuildReconciler};
pub use recorder::Recorder;
pub use retention::{Purger, RetentionSettings};
pub use run::{lease_for, run, DaemonPools, DaemonSettings};
