//! Taking a pending job (one worker per job) and keeping it alive with heartbeats.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::ProvisionerError;
use crate::db::enums::JobStatus;
use crate::db::models::ProvisionerJob;
use crate::db::schema::provisioner_jobs;
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

/// Take the next pending job whose tags `tags` cover (rules §6), if any, for `worker_id`: one
/// transaction, the row locked with `SKIP LOCKED` so concurrent workers each get a different
/// job (or none) without waiting. Only committed jobs are visible, so a job inserted by an
/// open transaction is never taken. The tag test (`tags <@ worker`) is part of the locking
/// statement, served by `provisioner_jobs_pending_tags_idx`, so a job a worker may not take
/// is never locked by it.
pub async fn acquire_next_tagged_job(
    conn: &mut AsyncPgConnection,
    worker_id: &str,
    tags: &Tags,
    now: DateTime<Utc>,
) -> Result<Option<ProvisionerJob>, ProvisionerError> {
    let worker_id = worker_id.to_owned();
    let worker_tags = serde_json::json!(tags);
    conn.transaction(async move |conn| {
        let next: Option<Uuid> = provisioner_jobs::table
            .filter(provisioner_jobs::status.eq(JobStatus::Pending))
            .filter(provisioner_jobs::tags.is_contained_by(&worker_tags))
            .order((
                provisioner_jobs::queue_priority,
                provisioner_jobs::created_at,
                provisioner_jobs::id,
            ))
            .select(provisioner_jobs::id)
            .limit(1)
            .for_update()
            .skip_locked()
            .get_result(conn)
            .await
            .optional()?;
        let Some(id) = next else { return Ok(None) };
        let job = diesel::update(provisioner_jobs::table.find(id))
            .set((
                provisioner_jobs::status.eq(JobStatus::Running),
                provisioner_jobs::started_at.eq(now),
                // The reaper compares heartbeats with the database's clock: write them by it.
                provisioner_jobs::heartbeat_at.eq(diesel::dsl::now),
                provisioner_jobs::worker_id.eq(&worker_id),
            ))
            .returning(ProvisionerJob::as_returning())
            .get_result(conn)
            .await?;
        Ok(Some(job))
    })
    .await
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
