//! The provisioner: workers that acquire pending jobs, run them on a backend (simulated or
//! terraform), heartbeat while they run, and write the completion; plus the reaper of jobs
//! whose worker was lost.

pub mod acquire;
pub mod agents;
pub mod backend;
pub mod complete;
pub mod context;
mod error;
mod listener;
pub mod reaper;
mod spool;
pub mod worker;

pub use acquire::{
    acquire_next_job, acquire_next_job_with_context, acquire_next_tagged_job, heartbeat,
};
pub use agents::flip_due_agents;
pub use backend::{Backends, SimulatedConfig, TerraformConfig};
pub use complete::{
    complete_job, complete_taken_job, end_taken_job, Acquired, AsTaken, Completion, JobResult,
    NextJob,
};
pub use error::{BackendError, ProvisionerError};
pub use reaper::{reap_stale_jobs, ReaperConfig};
pub use worker::{run_worker, WorkerConfig};

/// Re-exported: `run_worker` stops when this token is cancelled.
pub use tokio_util::sync::CancellationToken;
