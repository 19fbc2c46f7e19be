//! Writing decisions re-made on fresh, locked rows: for any number of workspaces, one
//! statement holds every row they need (jobs, builds, workspace updates, notifications,
//! audit entries), so a batch of hundreds costs the same few round trips as one decision.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, QueryFragment};
use diesel::sql_types::{Array, Bool, Nullable, Timestamptz, Uuid as SqlUuid};
use diesel::QueryResult;
use diesel_async::AsyncPgConnection;
use poolkeeper_core::lifecycle::{decide, tick_of, Decision, Workspace};
use uuid::Uuid;

use super::apply::Applied;
use super::load::{to_workspace, WorkspaceRow};
use crate::db::enums::{BuildReason, Transition};
use crate::db::models::{NewAuditEntry, NewNotification, NewProvisionerJob, NewWorkspaceBuild};
use crate::db::schema::{audit_log, notifications, provisioner_jobs, workspace_builds};
use crate::store::notifications::{notification, Dedupe, Kind};
use crate::store::rows::{audit, build_rows, BuildSpec, Writes};

/// The audit actor of this loop.
const LOOP: &str = "lifecycle";

/// A decision re-made by the core on a row read under its lock, with an effect to write.
pub(super) struct Decided {
    row: WorkspaceRow,
    workspace: Workspace,
    decision: Decision,
}

/// Re-decides `row` at `now`: the snapshot's decision may be a minute old, and a person may
/// have stopped, started or used the workspace meanwhile. `Err` is the stable label of why
/// nothing is to be written.
pub(super) fn redecide(now: DateTime<Utc>, row: WorkspaceRow) -> Result<Decided, &'static str> {
    let Ok(workspace) = to_workspace(&row) else { return Err("unreadable") };
    let decision = decide(&workspace, tick_of(now));
    if !decision.has_effect() {
        return Err("no_longer_due");
    }
    Ok(Decided { row, workspace, decision })
}

/// How the statement is run: a lone decision's text is one of a few and stays prepared on
/// its connection; a batch's varies with its size and is prepared for its run only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Statement {
    Kept,
    OneOff,
}

/// Writes every decision in one statement; returns what each became, in input order.
pub(super) async fn write_decided(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    decided: Vec<Decided>,
    statement: Statement,
) -> Result<Vec<(Uuid, Applied)>, diesel::result::Error> {
    let mut jobs: Vec<NewProvisionerJob> = Vec::new();
    let mut builds: Vec<NewWorkspaceBuild> = Vec::new();
    let mut updates = WorkspaceUpdates::new(now);
    let mut notes: Vec<NewNotification> = Vec::new();
    let mut entries: Vec<NewAuditEntry> = Vec::with_capacity(decided.len());
    let mut applied = Vec::with_capacity(decided.len());
    for Decided { row, workspace, decision } in decided {
        // Only a start decided with `use_active_version` moves to the active version
        // (rules §2); a stop or delete reuses the latest build's.
        let new_version = match (decision.use_active_version, row.active_version_id) {
            (true, Some(active)) if decision.transition.is_some() => active,
            _ => row.template_version_id,
        };
        let job_id = match (decision.transition, decision.reason) {
            (Some(transition), Some(reason)) => {
                let (job, build) = transition_rows(now, &row, new_version, transition, reason)?;
                let job_id = job.id;
                jobs.push(job);
                builds.push(build);
                Some(job_id)
            }
            _ => None,
        };
        updates.push(&row, &decision);
        notes.extend(owner_notification(now, &row, &decision));
        let diff = audit_diff(&row, &workspace, &decision, new_version, job_id);
        entries.push(audit(now, LOOP, "lifecycle", row.id, diff));
        applied.push((row.id, Applied::Done { decision, job_id }));
    }
    let mut writes = Writes::new();
    if !jobs.is_empty() {
        writes.push(diesel::insert_into(provisioner_jobs::table).values(&jobs));
        writes.push(diesel::insert_into(workspace_builds::table).values(&builds));
    }
    if !updates.ids.is_empty() {
        writes.push(&updates);
    }
    if !notes.is_empty() {
        writes.push(
            diesel::insert_into(notifications::table)
                .values(&notes)
                .on_conflict(notifications::dedupe_key)
                .do_nothing(),
        );
    }
    if !entries.is_empty() {
        writes.push(diesel::insert_into(audit_log::table).values(&entries));
    }
    match statement {
        Statement::Kept => writes.execute(conn).await?,
        Statement::OneOff => writes.execute_once(conn).await?,
    }
    Ok(applied)
}

/// The audit entry's diff: what changed, and the core's explanation, so that "why did this
/// stop at 02:00?" has its answer.
fn audit_diff(
    row: &WorkspaceRow,
    workspace: &Workspace,
    decision: &Decision,
    new_version: Uuid,
    job_id: Option<Uuid>,
) -> serde_json::Value {
    serde_json::json!({
        "transition": decision.transition.map(|t| t.as_str()),
        "reason": decision.reason.map(|r| r.as_str()),
        "rule": decision.rule.as_str(),
        "why": decision.why,
        "job_id": job_id,
        "old": {
            "dormant_at": workspace.dormant_at,
            "deleting_at": workspace.deleting_at,
            "next_start_at": workspace.next_start_at,
            "template_version_id": row.template_version_id,
        },
        "new": {
            "dormant_at": decision.mark_dormant.as_ref().map_or(workspace.dormant_at, |d| Some(d.dormant_at)),
            "deleting_at": decision.mark_dormant.as_ref().map_or(workspace.deleting_at, |d| d.deleting_at),
            "next_start_at": if decision.mark_dormant.is_some() { None } else { decision.next_start_at.or(workspace.next_start_at) },
            "template_version_id": new_version,
        },
    })
}

/// The build (of `template_version_id`) and job of the decision's transition.
fn transition_rows(
    now: DateTime<Utc>,
    row: &WorkspaceRow,
    template_version_id: Uuid,
    transition: poolkeeper_core::build::Transition,
    reason: poolkeeper_core::lifecycle::Reason,
) -> Result<(NewProvisionerJob, NewWorkspaceBuild), diesel::result::Error> {
    let reason: BuildReason = reason
        .as_str()
        .parse()
        .map_err(|err| diesel::result::Error::SerializationError(Box::new(err)))?;
    let transition = Transition::from(transition);
    let spec = BuildSpec {
        workspace_id: row.id,
        organization_id: row.organization_id,
        build_number: row.build_number + 1,
        template_version_id,
        preset_id: None,
        transition,
        reason,
        initiator_id: row.owner_id,
        for_prebuild: false,
        provisioner_state: row.provisioner_state.clone(),
    };
    Ok(build_rows(now, spec))
}

/// The workspace columns the decisions change, as one `UPDATE ... FROM unnest(...)`: a
/// dormancy mark sets `dormant_at` and `deleting_at` and clears the next start (a dormant
/// workspace never autostarts); otherwise a new next start is stored.
struct WorkspaceUpdates {
    now: DateTime<Utc>,
    ids: Vec<Uuid>,
    dormant: Vec<bool>,
    dormant_at: Vec<Option<DateTime<Utc>>>,
    deleting_at: Vec<Option<DateTime<Utc>>>,
    next_start_at: Vec<Option<DateTime<Utc>>>,
}

impl WorkspaceUpdates {
    fn new(now: DateTime<Utc>) -> Self {
        Self {
            now,
            ids: Vec::new(),
            dormant: Vec::new(),
            dormant_at: Vec::new(),
            deleting_at: Vec::new(),
            next_start_at: Vec::new(),
        }
    }

    fn push(&mut self, row: &WorkspaceRow, decision: &Decision) {
        let (dormant, dormant_at, deleting_at, next_start_at) = match &decision.mark_dormant {
            Some(mark) => (true, Some(mark.dormant_at), mark.deleting_at, None),
            None => match decision.next_start_at {
                Some(next) => (false, None, None, Some(next)),
                None => return,
            },
        };
        self.ids.push(row.id);
        self.dormant.push(dormant);
        self.dormant_at.push(dormant_at);
        self.deleting_at.push(deleting_at);
        self.next_start_at.push(next_start_at);
    }
}

impl QueryFragment<Pg> for WorkspaceUpdates {
    fn walk_ast<'b>(&'b self, mut pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        pass.push_sql(
            "UPDATE workspaces AS w SET \
             dormant_at = CASE WHEN u.dormant THEN u.dormant_at ELSE w.dormant_at END, \
             deleting_at = CASE WHEN u.dormant THEN u.deleting_at ELSE w.deleting_at END, \
             next_start_at = u.next_start_at, updated_at = ",
        );
        pass.push_bind_param::<Timestamptz, _>(&self.now)?;
        pass.push_sql(" FROM unnest(");
        pass.push_bind_param::<Array<SqlUuid>, _>(&self.ids)?;
        pass.push_sql(", ");
        pass.push_bind_param::<Array<Bool>, _>(&self.dormant)?;
        pass.push_sql(", ");
        pass.push_bind_param::<Array<Nullable<Timestamptz>>, _>(&self.dormant_at)?;
        pass.push_sql(", ");
        pass.push_bind_param::<Array<Nullable<Timestamptz>>, _>(&self.deleting_at)?;
        pass.push_sql(", ");
        pass.push_bind_param::<Array<Nullable<Timestamptz>>, _>(&self.next_start_at)?;
        pass.push_sql(
            ") AS u(id, dormant, dormant_at, deleting_at, next_start_at) WHERE w.id = u.id",
        );
        Ok(())
    }
}

/// Outbox rows: one per workspace, kind and day, so a flapping workspace never floods its
/// owner (rules §2 "Side effects").
fn owner_notification(
    now: DateTime<Utc>,
    row: &WorkspaceRow,
    decision: &Decision,
) -> Option<NewNotification> {
    let moved = decision.use_active_version
        && decision.transition.is_some()
        && row.active_version_id.is_some_and(|v| v != row.template_version_id);
    let (kind, payload) = if let Some(dormant) = &decision.mark_dormant {
        (
            Kind::WorkspaceDormant,
            serde_json::json!({ "workspace_id": row.id, "deleting_at": dormant.deleting_at }),
        )
    } else if moved {
        (
            Kind::WorkspaceAutoupdated,
            serde_json::json!({
                "workspace_id": row.id,
                "old_template_version_id": row.template_version_id,
                "template_version_id": row.active_version_id,
            }),
        )
    } else {
        return None;
    };
    Some(notification(now, row.owner_id, kind, Dedupe::Daily(row.id), payload))
}
