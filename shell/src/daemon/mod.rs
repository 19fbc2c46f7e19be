//! The daemon: the lifecycle loop and the prebuild loop, their leadership, pause,
//! wake-ups, backoff on database loss, graceful shutdown, and the HTTP health surface.
//!
//! Leadership is a session-level advisory lock per loop on a dedicated connection (see
//! `leader.rs` for why not a per-cycle transaction lock). Every replica runs both loops;
//! only the lock holder's cycles do anything.

pub mod error;
pub mod http;
pub mod leader;
pub mod lifecycle;
mod listen;
mod pool_metrics;
pub mod prebuilds;
pub mod recorder;
mod run;

pub use error::DaemonError;
pub use lifecycle::{LifecycleExecutor, TickStats};
pub use prebuilds::{CycleOutcome, CycleStats, PrebuildReconciler};
pub use recorder::Recorder;
pub use run::{run, DaemonSettings};
