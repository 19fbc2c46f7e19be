//! `GET /api/v1/workspaces` and `workspaces list`: live workspaces a page at a time, each
//! with its latest build, in one query (`sql/workspace_page.sql`) whatever the page size.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Int4, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::workspaces::WorkspaceView;
use super::StoreError;
use crate::db::enums::{AutomaticUpdates, BuildReason, JobStatus, Transition};
use crate::db::models::{Workspace, WorkspaceBuild};
use crate::db::schema::workspaces;
use crate::db::DbPool;

const PAGE_SQL: &str = include_str!("sql/workspace_page.sql");

/// Which page: whose workspaces, after which one, how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Only this owner's workspaces; `None` = everyone's.
    pub owner: Option<Uuid>,
    /// The last workspace of the previous page; `None` = the first page.
    pub after: Option<Uuid>,
    pub limit: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// `after` names no workspace of this listing (unknown, or another owner's).
    #[error("not a workspace of this listing")]
    UnknownCursor,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<diesel::result::Error> for PageError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Store(StoreError::Query(err))
    }
}

/// One page in (created_at, id) order. `latest_build.provisioner_state` is not loaded.
pub async fn list_page(pool: &DbPool, page: PageRequest) -> Result<Vec<WorkspaceView>, PageError> {
    let mut conn = pool.get().await.map_err(StoreError::from)?;
    list_page_on(&mut conn, page).await
}

/// [`list_page`] on `conn`: one statement, plus one more only when a page after a cursor
/// comes back empty, to tell the end of the listing from a cursor that is not in it.
pub async fn list_page_on(
    conn: &mut AsyncPgConnection,
    page: PageRequest,
) -> Result<Vec<WorkspaceView>, PageError> {
    let rows: Vec<PageRow> = diesel::sql_query(PAGE_SQL)
        .bind::<Nullable<SqlUuid>, _>(page.owner) // $1 owner
        .bind::<Nullable<SqlUuid>, _>(page.after) // $2 after
        .bind::<BigInt, _>(page.limit) // $3 limit
        .load(conn)
        .await?;
    if let (true, Some(after)) = (rows.is_empty(), page.after) {
        let mut cursor = workspaces::table.filter(workspaces::id.eq(after)).into_boxed();
        if let Some(owner) = page.owner {
            cursor = cursor.filter(workspaces::owner_id.eq(owner));
        }
        let found: i64 = cursor.count().get_result(conn).await?;
        if found == 0 {
            return Err(PageError::UnknownCursor);
        }
    }
    Ok(rows.into_iter().map(PageRow::into_view).collect())
}

/// A row of `workspace_page.sql`, decoded by column name; `b_*` are the latest build's.
#[derive(QueryableByName)]
struct PageRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    organization_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    owner_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    template_id: Uuid,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Nullable<Text>)]
    autostart_schedule: Option<String>,
    #[diesel(sql_type = BigInt)]
    ttl_secs: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    next_start_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Timestamptz)]
    last_used_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    dormant_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    deleting_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Text)]
    automatic_updates: AutomaticUpdates,
    #[diesel(sql_type = Bool)]
    deleted: bool,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    updated_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    b_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Int4>)]
    b_build_number: Option<i32>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    b_template_version_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    b_preset_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Text>)]
    b_transition: Option<Transition>,
    #[diesel(sql_type = Nullable<Text>)]
    b_reason: Option<BuildReason>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    b_initiator_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    b_job_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    b_deadline: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    b_max_deadline: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    b_created_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    job_status: Option<JobStatus>,
}

impl PageRow {
    fn into_view(self) -> WorkspaceView {
        // Every b_* column is NOT NULL in its table: all present, or no build at all.
        let latest_build = match (
            self.b_id,
            self.b_build_number,
            self.b_template_version_id,
            self.b_transition,
            self.b_reason,
            self.b_initiator_id,
            self.b_job_id,
            self.b_created_at,
        ) {
            (
                Some(id),
                Some(build_number),
                Some(template_version_id),
                Some(transition),
                Some(reason),
                Some(initiator_id),
                Some(job_id),
                Some(created_at),
            ) => Some(WorkspaceBuild {
                id,
                workspace_id: self.id,
                build_number,
                template_version_id,
                preset_id: self.b_preset_id,
                transition,
                reason,
                initiator_id,
                job_id,
                deadline: self.b_deadline,
                max_deadline: self.b_max_deadline,
                provisioner_state: None,
                created_at,
            }),
            _ => None,
        };
        let workspace = Workspace {
            id: self.id,
            organization_id: self.organization_id,
            owner_id: self.owner_id,
            template_id: self.template_id,
            name: self.name,
            autostart_schedule: self.autostart_schedule,
            ttl_secs: self.ttl_secs,
            next_start_at: self.next_start_at,
            last_used_at: self.last_used_at,
            dormant_at: self.dormant_at,
            deleting_at: self.deleting_at,
            automatic_updates: self.automatic_updates,
            deleted: self.deleted,
            created_at: self.created_at,
            updated_at: self.updated_at,
        };
        WorkspaceView {
            workspace,
            job_status: self.job_status.filter(|_| latest_build.is_some()),
            latest_build,
        }
    }
}
