//! Taking a pending job (one worker per job) and keeping it alive with heartbeats; the
//! statements are the store's (`store::jobs`).

use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use super::context::JobContext;
use super::ProvisionerError;
use crate::db::enums::JobStatus;
use crate::db::models::ProvisionerJob;
use poolkeeper_core::tags::Tags;

/// Take the next pending untagged job, if any, for an untagged worker (see
/// [`acquire_next_tagged_job`]).
pub async fn acquire_next_job(
    conn: &mut AsyncPgConnection,
    worker_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<ProvisionerJob>, ProvisionerError> {
    acquire_next_tagged_job(conn, worker_id, &Tags::new(), now).await
}

/// Take the next pending job whose tags `tags` cover (rules §7), if any, for `worker_id`,
/// without waiting for another worker's (`store::jobs::acquire_next`).
pub async fn acquire_next_tagged_job(
    conn: &mut AsyncPgConnection,
    worker_id: &str,
    tags: &Tags,
    now: DateTime<Utc>,
) -> Result<Option<ProvisionerJob>, ProvisionerError> {
    Ok(crate::store::jobs::acquire_next(conn, worker_id, tags, now).await?)
}

/// Take the next pending job whose tags `tags` cover and read its context, in one round trip
/// (`store::jobs::acquire_next_with_context`). The context is `None` when it must be read
/// on its own (`load_context`), which then also reports a job without a build.
pub async fn acquire_next_job_with_context(
    conn: &AsyncPgConnection,
    worker_id: &str,
    tags: &Tags,
    now: DateTime<Utc>,
) -> Result<Option<(ProvisionerJob, Option<JobContext>)>, ProvisionerError> {
    Ok(crate::store::jobs::acquire_next_with_context(conn, worker_id, tags, now).await?)
}

/// Record that `worker_id` is still working on `job_id`, at the database's time. Returns the
/// job's current status, or `None` if the job is no longer this worker's (reaped, or taken
/// over), in which case the worker must stop.
pub async fn heartbeat(
    conn: &mut AsyncPgConnection,
    job_id: Uuid,
    worker_id: &str,
) -> Result<Option<JobStatus>, ProvisionerError> {
    Ok(crate::store::jobs::heartbeat(conn, job_id, worker_id).await?)
}
