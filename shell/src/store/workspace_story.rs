//! What the dashboard reads about workspaces besides the lifecycle snapshot: their names and
//! owners, the lifecycle executor's recent decisions (its audit entries carry the core's
//! rule and explanation), and one workspace's recent builds.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::audit::{list, AuditFilter};
use super::StoreError;
use crate::db::models::AuditEntry;
use crate::db::DbPool;

/// A workspace as people name it.
#[derive(Debug, Clone, PartialEq, Eq, diesel::QueryableByName)]
pub struct WorkspaceLabel {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub owner: String,
    #[diesel(sql_type = Text)]
    pub template: String,
}

/// One build of a workspace with its job's outcome.
#[derive(Debug, Clone, PartialEq, Eq, diesel::QueryableByName)]
pub struct BuildLine {
    #[diesel(sql_type = Integer)]
    pub build_number: i32,
    #[diesel(sql_type = Text)]
    pub transition: String,
    #[diesel(sql_type = Text)]
    pub reason: String,
    #[diesel(sql_type = Text)]
    pub initiator: String,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub job_status: String,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub completed_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub deadline: Option<DateTime<Utc>>,
}

/// The names of workspaces `ids` (deleted ones too), by id.
pub async fn workspace_labels(
    pool: &DbPool,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, WorkspaceLabel>, StoreError> {
    let mut conn = pool.get().await?;
    let rows: Vec<WorkspaceLabel> = diesel::sql_query(
        "SELECT w.id, w.name, u.username AS owner, t.name AS template
         FROM workspaces w JOIN users u ON u.id = w.owner_id JOIN templates t ON t.id = w.template_id
         WHERE w.id = ANY($1)",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .load(&mut conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.id, row)).collect())
}

/// The lifecycle executor's newest `limit` decisions (its audit entries), newest first;
/// `workspace` narrows them to one workspace.
pub async fn recent_lifecycle_decisions(
    pool: &DbPool,
    workspace: Option<Uuid>,
    limit: i64,
) -> Result<Vec<AuditEntry>, StoreError> {
    let filter = AuditFilter {
        actor: Some("lifecycle".to_owned()),
        resource_type: Some("workspace".to_owned()),
        resource_id: workspace,
        limit,
        ..AuditFilter::default()
    };
    list(pool, &filter).await
}

/// Every audit entry about workspace `id`, newest first, at most `limit`.
pub async fn workspace_audit(
    pool: &DbPool,
    id: Uuid,
    limit: i64,
) -> Result<Vec<AuditEntry>, StoreError> {
    let filter = AuditFilter { resource_id: Some(id), limit, ..AuditFilter::default() };
    list(pool, &filter).await
}

/// The newest `limit` builds of workspace `id`, newest first.
pub async fn recent_builds(
    pool: &DbPool,
    id: Uuid,
    limit: i64,
) -> Result<Vec<BuildLine>, StoreError> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(
        "SELECT b.build_number, b.transition, b.reason, u.username AS initiator, b.created_at,
                j.status AS job_status, j.completed_at, j.error, b.deadline
         FROM workspace_builds b
         JOIN provisioner_jobs j ON j.id = b.job_id
         JOIN users u ON u.id = b.initiator_id
         WHERE b.workspace_id = $1
         ORDER BY b.build_number DESC LIMIT $2",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<BigInt, _>(limit)
    .load(&mut conn)
    .await?)
}
