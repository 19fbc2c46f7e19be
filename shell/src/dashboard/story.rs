//! A workspace's story: what the rules say about it now and next, the latest decision the
//! executor recorded (with the core's explanation), its recent builds and audit entries.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{TimeDelta, Utc};
use maud::html;
use poolkeeper_core::lifecycle::{decide, tick_of, upcoming};
use uuid::Uuid;

use super::error::DashboardError;
use super::layout::{self, Nav};
use super::lifecycle::recorded;
use super::session::Operator;
use super::DashboardState;
use crate::store::lifecycle::load_lifecycle_candidate;
use crate::store::workspace_story::{
    recent_builds, recent_lifecycle_decisions, workspace_audit, workspace_labels,
};
use crate::store::StoreError;

const BUILDS_SHOWN: i64 = 10;
const AUDIT_SHOWN: i64 = 20;

/// `GET /dashboard/workspaces/{id}` (owners).
pub async fn page(
    State(state): State<DashboardState>,
    operator: Operator,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, DashboardError> {
    operator.require_owner("read a workspace's story")?;
    let id: Uuid =
        id.parse().map_err(|_| DashboardError::bad_input("id", "not a workspace id (a UUID)"))?;
    let labels = workspace_labels(&state.pool, &[id]).await?;
    let label = labels.get(&id).ok_or(DashboardError::NotFound("workspace"))?;
    let now = Utc::now();
    let candidate = {
        let mut conn = state.pool.get().await.map_err(StoreError::from)?;
        load_lifecycle_candidate(&mut conn, id).await?
    };
    let latest = recent_lifecycle_decisions(&state.pool, Some(id), 1).await?;
    let builds = recent_builds(&state.pool, id, BUILDS_SHOWN).await?;
    let audit = workspace_audit(&state.pool, id, AUDIT_SHOWN).await?;
    let title = format!("{}/{}", label.owner, label.name);
    let live = html! {
        p.muted { "Template " (label.template) ", id " code { (id) } }
        section #latest-decision {
            h2 { "Latest recorded decision" }
            @match latest.first() {
                Some(entry) => {
                    dl {
                        dt { "At" } dd { (entry.at.format("%Y-%m-%d %H:%M:%S UTC")) }
                        dt { "Rule" } dd.rule { (recorded(entry, "rule")) }
                        dt { "Build" } dd { (recorded(entry, "transition")) " (" (recorded(entry, "reason")) ")" }
                        dt { "Why" } dd.why { (recorded(entry, "why")) }
                    }
                }
                None => { p.muted { "The lifecycle executor has recorded no decision for it." } }
            }
        }
        section #rules-now {
            h2 { "What the rules say now" }
            @match &candidate {
                Some(workspace) => {
                    @let now_decision = decide(workspace, tick_of(now));
                    dl {
                        dt { "This minute" } dd { code { (now_decision.rule.as_str()) } " " (now_decision.why) }
                        dt { "Next" }
                        dd {
                            @match upcoming(workspace, now, TimeDelta::days(7)) {
                                Some(next) => { (next.at.format("%Y-%m-%d %H:%M UTC")) ": " code { (next.decision.rule.as_str()) } " " (next.decision.why) }
                                None => { "nothing in the next 7 days, unless something changes" }
                            }
                        }
                    }
                }
                None => { p.muted { "Not a lifecycle candidate (a prebuild, or deleted)." } }
            }
        }
        section #builds {
            h2 { "Recent builds" }
            table.builds {
                thead { tr { th { "#" } th { "Transition" } th { "Reason" } th { "By" } th { "Created" } th { "Job" } th { "Deadline" } } }
                tbody {
                    @for build in &builds {
                        tr {
                            td data-label="#" { (build.build_number) }
                            td data-label="Transition" { (build.transition) }
                            td data-label="Reason" { (build.reason) }
                            td data-label="By" { (build.initiator) }
                            td data-label="Created" { (build.created_at.format("%Y-%m-%d %H:%M:%S")) }
                            td data-label="Job" {
                                (build.job_status)
                                @if let Some(error) = &build.error { ": " (error) }
                            }
                            td data-label="Deadline" {
                                @match build.deadline { Some(d) => { (d.format("%Y-%m-%d %H:%M")) } None => { "—" } }
                            }
                        }
                    }
                }
            }
        }
        section #audit {
            h2 { "Audit entries" }
            table.audit {
                thead { tr { th { "At" } th { "Actor" } th { "Action" } th { "Change" } } }
                tbody {
                    @for entry in &audit {
                        tr {
                            td data-label="At" { (entry.at.format("%Y-%m-%d %H:%M:%S")) }
                            td data-label="Actor" { (entry.actor) }
                            td data-label="Action" { (entry.action) }
                            td data-label="Change" { code.diff { (entry.diff.to_string()) } }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::respond(&headers, &title, &operator, Nav::Workspace, live))
}
