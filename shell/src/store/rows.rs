//! Write helpers shared by the appliers: a build with its job, an audit entry, and the
//! statement wrappers that keep a write path to few round trips.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::QueryResult;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::db::enums::{BuildReason, Transition};
use crate::db::models::{NewAuditEntry, NewProvisionerJob, NewWorkspaceBuild};
use crate::db::schema::{audit_log, provisioner_jobs, workspace_builds};

/// A statement each connection prepares once and then reuses: one round trip a run.
///
/// Diesel prepares a `sql_query`, an `UPDATE`, an `ON CONFLICT` and any insert with an
/// optional column afresh on every run and closes it afterwards (a second round trip, plus
/// an unawaited close), because its cache is keyed by the statement's Rust type, which does
/// not pin their SQL. Without a static query id the cache is keyed by the SQL text and the
/// bind types instead, which is what a prepared statement is, so reusing it is sound. Only
/// wrap statements whose text comes from a small fixed set (not, say, a multi-row insert of
/// a varying number of rows): every distinct text stays prepared on its connection.
///
/// Rows of a `sql_query` are read by name (`QueryableByName`), never by position, so a column
/// added to a table cannot shift a field; a query built with the DSL keeps its typed
/// columns (a boxed query, say, which Diesel would otherwise plan afresh on every run).
pub(crate) struct Prepared<Q> {
    query: Q,
}

impl<Q> Prepared<Q> {
    pub(crate) fn new(query: Q) -> Self {
        Self { query }
    }
}

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for Prepared<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.query.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

impl<Q> QueryId for Prepared<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for Prepared<Q> {
    type SqlType = Q::SqlType;
}

/// Several writes as one statement, `WITH s0 AS (first), s1 AS (second) last`: one round
/// trip instead of one per write. Each write sees the statement's snapshot, not the others'
/// rows, and foreign keys are checked at its end, so a build may reference a job inserted
/// alongside it.
pub(crate) struct Writes<'a> {
    statements: Vec<Box<dyn QueryFragment<Pg> + Send + 'a>>,
}

impl<'a> Writes<'a> {
    pub(crate) fn new() -> Self {
        Self { statements: Vec::new() }
    }

    /// Appends `statement` (an `INSERT`, `UPDATE` or `DELETE` without `RETURNING`).
    pub(crate) fn push(&mut self, statement: impl QueryFragment<Pg> + Send + 'a) {
        self.statements.push(Box::new(statement));
    }

    /// Runs them as a statement the connection keeps prepared; nothing is done when there
    /// are none. Only for a small fixed set of texts (see [`Prepared`]).
    pub(crate) async fn execute(self, conn: &mut AsyncPgConnection) -> QueryResult<()> {
        if !self.statements.is_empty() {
            Prepared::new(self).execute(conn).await?;
        }
        Ok(())
    }

    /// Runs them as a statement prepared for this run only: for texts that vary with the
    /// number of rows (multi-row inserts), which would otherwise each stay prepared.
    pub(crate) async fn execute_once(self, conn: &mut AsyncPgConnection) -> QueryResult<()> {
        if !self.statements.is_empty() {
            OneOff { query: self }.execute(conn).await?;
        }
        Ok(())
    }
}

/// A statement never cached on its connection (the counterpart of [`Prepared`]).
struct OneOff<Q> {
    query: Q,
}

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for OneOff<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.query.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &Pg) -> QueryResult<bool> {
        Ok(false)
    }
}

impl<Q> QueryId for OneOff<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q> Query for OneOff<Q> {
    type SqlType = diesel::sql_types::Untyped;
}

impl QueryFragment<Pg> for Writes<'_> {
    fn walk_ast<'b>(&'b self, mut pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let Some((last, first)) = self.statements.split_last() else { return Ok(()) };
        for (i, statement) in first.iter().enumerate() {
            pass.push_sql(if i == 0 { "WITH " } else { ", " });
            pass.push_sql(&format!("s{i} AS ("));
            statement.walk_ast(pass.reborrow())?;
            pass.push_sql(") ");
        }
        last.walk_ast(pass.reborrow())
    }
}

/// Rows per multi-row insert: PostgreSQL takes at most 65,535 bind parameters per statement,
/// and the widest row written in bulk (a build) has 13 columns.
pub(crate) const ROWS_PER_INSERT: usize = 4_000;

/// One build to insert together with its pending job.
pub(crate) struct BuildSpec {
    pub workspace_id: Uuid,
    pub organization_id: Uuid,
    pub build_number: i32,
    pub template_version_id: Uuid,
    pub preset_id: Option<Uuid>,
    pub transition: Transition,
    pub reason: BuildReason,
    pub initiator_id: Uuid,
    pub for_prebuild: bool,
    pub provisioner_state: Option<Vec<u8>>,
}

/// Inserts the jobs then the builds (the build references its job), one statement each per
/// [`ROWS_PER_INSERT`] builds. Returns the job ids, in input order.
pub(crate) async fn insert_builds(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    specs: Vec<BuildSpec>,
) -> Result<Vec<Uuid>, diesel::result::Error> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let (jobs, builds): (Vec<_>, Vec<_>) =
        specs.into_iter().map(|spec| build_rows(now, spec)).unzip();
    let job_ids = jobs.iter().map(|job| job.id).collect();
    for chunk in jobs.chunks(ROWS_PER_INSERT) {
        diesel::insert_into(provisioner_jobs::table).values(chunk).execute(conn).await?;
    }
    for chunk in builds.chunks(ROWS_PER_INSERT) {
        diesel::insert_into(workspace_builds::table).values(chunk).execute(conn).await?;
    }
    Ok(job_ids)
}

/// What a job carries to the provisioner, for every build whoever queues it: the
/// workspace, the build, its version and transition, and the parameters a person asked for
/// (a prebuild's come from its preset, read when the job runs).
#[derive(Debug, serde::Serialize)]
pub(crate) struct JobInput<'a> {
    pub workspace_id: Uuid,
    pub build_id: Uuid,
    pub template_version_id: Uuid,
    pub transition: crate::db::enums::Transition,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<&'a serde_json::Value>,
}

impl JobInput<'_> {
    pub(crate) fn to_json(&self) -> serde_json::Value {
        // A struct of ids, an enum and a JSON value always serializes.
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// The rows of one build and its pending job (the build references its job).
pub(crate) fn build_rows(
    now: DateTime<Utc>,
    spec: BuildSpec,
) -> (NewProvisionerJob, NewWorkspaceBuild) {
    let job_id = Uuid::new_v4();
    let build_id = Uuid::new_v4();
    let job = NewProvisionerJob {
        id: job_id,
        organization_id: spec.organization_id,
        input: JobInput {
            workspace_id: spec.workspace_id,
            build_id,
            template_version_id: spec.template_version_id,
            transition: spec.transition,
            parameters: None,
        }
        .to_json(),
        for_prebuild: spec.for_prebuild,
        transition: spec.transition,
        created_at: Some(now),
    };
    let build = NewWorkspaceBuild {
        id: build_id,
        workspace_id: spec.workspace_id,
        build_number: spec.build_number,
        template_version_id: spec.template_version_id,
        preset_id: spec.preset_id,
        transition: spec.transition,
        reason: spec.reason,
        initiator_id: spec.initiator_id,
        job_id,
        deadline: None,
        max_deadline: None,
        provisioner_state: spec.provisioner_state,
        created_at: Some(now),
    };
    (job, build)
}

/// An audit entry written by one of the daemon's loops; `actor` names the loop
/// (`lifecycle`, `prebuilds`).
pub(crate) fn audit(
    now: DateTime<Utc>,
    actor: &str,
    action: &str,
    workspace_id: Uuid,
    diff: serde_json::Value,
) -> NewAuditEntry {
    NewAuditEntry {
        at: Some(now),
        actor_id: None,
        actor: actor.to_owned(),
        action: action.to_owned(),
        resource_type: "workspace".to_owned(),
        resource_id: Some(workspace_id),
        diff,
    }
}

pub(crate) async fn insert_audit(
    conn: &mut AsyncPgConnection,
    entries: &[NewAuditEntry],
) -> Result<(), diesel::result::Error> {
    for chunk in entries.chunks(ROWS_PER_INSERT) {
        diesel::insert_into(audit_log::table).values(chunk).execute(conn).await?;
    }
    Ok(())
}
