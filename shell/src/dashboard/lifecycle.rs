//! The lifecycle page: what the rules will do soon (autostarts and autostops in the next
//! hour, dormancy and deletions in the next seven days), asked of the core over the same
//! snapshot the executor loads, and the executor's recent decisions with their explanation.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, TimeDelta, Utc};
use maud::{html, Markup};
use poolkeeper_core::lifecycle::{upcoming, Reason, Upcoming};
use uuid::Uuid;

use super::error::DashboardError;
use super::layout::{self, Nav};
use super::session::Operator;
use super::DashboardState;
use crate::db::models::AuditEntry;
use crate::store::lifecycle::load_lifecycle_snapshot;
use crate::store::workspace_story::{recent_lifecycle_decisions, workspace_labels, WorkspaceLabel};
use crate::store::StoreError;

/// How far ahead starts and stops are listed.
const STARTS_AND_STOPS: TimeDelta = TimeDelta::hours(1);
/// How far ahead dormancy and deletions are listed.
const DORMANCY_AND_DELETES: TimeDelta = TimeDelta::days(7);
/// Rows per list: the page stays readable on a big fleet.
const LIST_LIMIT: usize = 200;
/// Recent decisions shown.
const RECENT_LIMIT: i64 = 50;

/// What the rules will do soon, split as the page lists it.
#[derive(Debug, Default)]
pub struct Soon {
    pub starts_and_stops: Vec<Upcoming>,
    pub dormancy_and_deletes: Vec<Upcoming>,
}

/// Sorts each workspace's next decision into its list (each by time, at most
/// [`LIST_LIMIT`]): a decision that marks dormant or deletes belongs to the week's list, any
/// other build to the hour's.
pub fn sort_upcoming(next: impl IntoIterator<Item = Upcoming>, now: DateTime<Utc>) -> Soon {
    let mut soon = Soon::default();
    for item in next {
        let long_term = item.decision.mark_dormant.is_some()
            || matches!(item.decision.reason, Some(Reason::Dormancy | Reason::Autodelete));
        if long_term {
            soon.dormancy_and_deletes.push(item);
        } else if item.at <= now + STARTS_AND_STOPS {
            soon.starts_and_stops.push(item);
        }
    }
    for list in [&mut soon.starts_and_stops, &mut soon.dormancy_and_deletes] {
        list.sort_by_key(|item| (item.at, item.decision.workspace_id));
        list.truncate(LIST_LIMIT);
    }
    soon
}

/// `GET /dashboard/lifecycle` (owners: it lists everyone's workspaces).
pub async fn page(
    State(state): State<DashboardState>,
    operator: Operator,
    headers: HeaderMap,
) -> Result<Response, DashboardError> {
    operator.require_owner("see every workspace's lifecycle")?;
    let now = Utc::now();
    let snapshot = {
        let mut conn = state.pool.get().await.map_err(StoreError::from)?;
        load_lifecycle_snapshot(&mut conn, now).await?
    };
    let soon = sort_upcoming(
        snapshot.workspaces.iter().filter_map(|ws| upcoming(ws, now, DORMANCY_AND_DELETES)),
        now,
    );
    let recent = recent_lifecycle_decisions(&state.pool, None, RECENT_LIMIT).await?;
    let mut ids: Vec<Uuid> = soon
        .starts_and_stops
        .iter()
        .chain(&soon.dormancy_and_deletes)
        .map(|item| item.decision.workspace_id)
        .collect();
    ids.extend(recent.iter().filter_map(|entry| entry.resource_id));
    let labels = workspace_labels(&state.pool, &ids).await?;
    let live = html! {
        section #starts-and-stops {
            h2 { "Autostarts and autostops in the next hour" }
            (upcoming_table(&soon.starts_and_stops, &labels, "Nothing starts or stops in the next hour."))
        }
        section #dormancy-and-deletes {
            h2 { "Dormancy and deletions in the next 7 days" }
            (upcoming_table(&soon.dormancy_and_deletes, &labels, "No workspace goes dormant or is deleted in the next 7 days."))
        }
        section #recent-decisions {
            h2 { "Recent lifecycle decisions" }
            (recent_table(&recent, &labels))
        }
        p.muted.updated { "as of " (now.format("%H:%M:%S UTC")) "; upcoming means: if nothing about the workspace changes before" }
    };
    Ok(layout::respond(&headers, "Lifecycle", &operator, Nav::Lifecycle, live))
}

/// A workspace's name as a link to its story.
pub fn workspace_link(
    id: Uuid,
    labels: &std::collections::HashMap<Uuid, WorkspaceLabel>,
) -> Markup {
    let href = format!("/dashboard/workspaces/{id}");
    html! {
        @match labels.get(&id) {
            Some(label) => { a href=(href) { (label.owner) "/" (label.name) } }
            None => { a href=(href) { (id) } }
        }
    }
}

fn upcoming_table(
    items: &[Upcoming],
    labels: &std::collections::HashMap<Uuid, WorkspaceLabel>,
    empty: &str,
) -> Markup {
    html! {
        @if items.is_empty() {
            p.muted { (empty) }
        } @else {
            table.decisions {
                thead { tr { th { "At" } th { "Workspace" } th { "Rule" } th { "Explanation" } } }
                tbody {
                    @for item in items {
                        tr data-workspace=(item.decision.workspace_id) {
                            td data-label="At" { (item.at.format("%Y-%m-%d %H:%M UTC")) }
                            td data-label="Workspace" { (workspace_link(item.decision.workspace_id, labels)) }
                            td.rule data-label="Rule" { (item.decision.rule.as_str()) }
                            td data-label="Explanation" { (item.decision.why) }
                        }
                    }
                }
            }
        }
    }
}

/// A recorded decision's fields from its audit entry's diff.
pub fn recorded(entry: &AuditEntry, field: &str) -> String {
    match entry.diff.get(field) {
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(serde_json::Value::Null) | None => "—".to_owned(),
        Some(other) => other.to_string(),
    }
}

fn recent_table(
    entries: &[AuditEntry],
    labels: &std::collections::HashMap<Uuid, WorkspaceLabel>,
) -> Markup {
    html! {
        @if entries.is_empty() {
            p.muted { "The lifecycle executor has not decided anything yet." }
        } @else {
            table.decisions {
                thead { tr { th { "At" } th { "Workspace" } th { "Rule" } th { "Build" } th { "Explanation" } } }
                tbody {
                    @for entry in entries {
                        tr {
                            td data-label="At" { (entry.at.format("%Y-%m-%d %H:%M:%S UTC")) }
                            td data-label="Workspace" {
                                @if let Some(id) = entry.resource_id { (workspace_link(id, labels)) }
                            }
                            td.rule data-label="Rule" { (recorded(entry, "rule")) }
                            td data-label="Build" { (recorded(entry, "transition")) }
                            td data-label="Explanation" { (recorded(entry, "why")) }
                        }
                    }
                }
            }
        }
    }
}
