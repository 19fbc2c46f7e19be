//! Everything a backend needs to know about a job (read by the store, `store::jobs`).

use diesel_async::AsyncPgConnection;

use super::ProvisionerError;
use crate::db::models::ProvisionerJob;
pub use crate::store::jobs::JobContext;

pub async fn load_context(
    conn: &mut AsyncPgConnection,
    job: ProvisionerJob,
) -> Result<JobContext, ProvisionerError> {
    let job_id = job.id;
    crate::store::jobs::job_context(conn, job)
        .await?
        .ok_or(ProvisionerError::MissingBuild { job_id })
}
