//! Announcing new jobs to provisioners.
//!
//! The `provisioner_jobs_notify_job` trigger (migration 4) already sends
//! `NOTIFY poolkeeper_jobs, '<job id>'` for every job inserted as `pending`, and PostgreSQL
//! delivers it only at commit: a provisioner never sees a job before it exists. Sending a
//! second NOTIFY here would only double the wake-ups, so `publish_jobs` records what was
//! published and leaves the delivery to the trigger. Provisioners also poll, so a lost
//! notification delays a job, never loses it.

use uuid::Uuid;

/// Called by the loops after the transaction that created `job_ids` committed.
pub fn publish_jobs(job_ids: &[Uuid]) {
    if !job_ids.is_empty() {
        tracing::debug!(jobs = job_ids.len(), "jobs published by the commit trigger");
    }
}
