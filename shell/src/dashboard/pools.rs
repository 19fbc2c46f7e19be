//! The pools page: one row per preset the reconciler sees, with the core's counts and
//! explanations, the last hour's and day's activity, a 24-hour chart, and the buttons that
//! pause or resume reconciliation and invalidate a preset.

use std::collections::HashMap;

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use poolkeeper_core::prebuilds::{PresetStatus, Withheld, WithheldReason};
use uuid::Uuid;

use super::chart::pool_chart;
use super::error::DashboardError;
use super::layout::{self, Nav};
use super::session::{form_fields, Operator};
use super::DashboardState;
use crate::store::audit::Actor;
use crate::store::pool_board::{pool_board, PoolActivity, PoolRow};
use crate::store::pool_samples::{pool_samples_since, PoolSample, SAMPLES_KEPT};
use crate::store::settings::{reconciliation_paused, set_reconciliation_paused_by};
use crate::store::templates::invalidate_preset;
use crate::store::StoreError;

/// `GET /dashboard`.
pub async fn redirect_home() -> Redirect {
    Redirect::to("/dashboard/pools")
}

/// `GET /dashboard/pools`; `?done=` names the change just made, to confirm it.
pub async fn page(
    State(state): State<DashboardState>,
    operator: Operator,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, DashboardError> {
    let now = Utc::now();
    let rows = pool_board(&state.pool, now, state.reconciler).await?;
    let paused = {
        let mut conn = state.pool.get().await.map_err(StoreError::from)?;
        reconciliation_paused(&mut conn).await?
    };
    let mut samples: HashMap<Uuid, Vec<PoolSample>> = HashMap::new();
    for sample in pool_samples_since(&state.pool, now - SAMPLES_KEPT).await? {
        samples.entry(sample.preset_id).or_default().push(sample);
    }
    let done = query.get("done").map(String::as_str);
    let live = render(&operator, paused, &rows, &samples, done, now);
    Ok(layout::respond(&headers, "Pools", &operator, Nav::Pools, live))
}

fn render(
    operator: &Operator,
    paused: bool,
    rows: &[PoolRow],
    samples: &HashMap<Uuid, Vec<PoolSample>>,
    done: Option<&str>,
    now: DateTime<Utc>,
) -> Markup {
    let confirmation = match done {
        Some("paused") => Some("Reconciliation paused: no prebuild is created or deleted until it resumes; claims still work."),
        Some("resumed") => Some("Reconciliation resumed."),
        Some("invalidated") => Some("Preset invalidated: its prebuilds are replaced in the next cycles."),
        _ => None,
    };
    html! {
        @if let Some(message) = confirmation {
            p.notice role="status" #done { (message) }
        }
        section.reconciliation #reconciliation data-paused=(paused) {
            @if paused {
                strong.status-paused { "Reconciliation is paused" }
            } @else {
                strong.status-running { "Reconciliation is running" }
            }
            @if operator.is_owner() {
                form method="post" action=(if paused { "/dashboard/pools/resume" } else { "/dashboard/pools/pause" }) {
                    input type="hidden" name="csrf" value=(operator.csrf_token);
                    @if paused {
                        button #resume type="submit" { "Resume" }
                    } @else {
                        button #pause type="submit" { "Pause" }
                    }
                }
            } @else {
                span.muted { "owners pause and resume" }
            }
            span.muted.updated { "as of " (now.format("%H:%M:%S UTC")) }
        }
        @if rows.is_empty() {
            p.muted { "No pools: no template's active version has a preset with prebuilds." }
        } @else {
            table.pools {
                thead {
                    tr {
                        th { "Pool" } th { "Status" }
                        th { "Desired" } th { "Running" } th { "Eligible" } th { "Starting" } th { "Deleting" }
                        th { "Last 1 h / 24 h" } th { "Explanation" } th { "Last failure" }
                        th { "Desired vs eligible, 24 h" } th { "" }
                    }
                }
                tbody {
                    @for row in rows {
                        (pool_row(operator, paused, row, samples.get(&row.preset_id).map(Vec::as_slice).unwrap_or_default(), now))
                    }
                }
            }
        }
    }
}

fn pool_row(
    operator: &Operator,
    paused: bool,
    row: &PoolRow,
    samples: &[PoolSample],
    now: DateTime<Utc>,
) -> Markup {
    let status = status_text(paused, row);
    let activity = |pick: fn(&PoolActivity) -> i64| {
        format!("{} / {}", pick(&row.last_hour), pick(&row.last_day))
    };
    html! {
        tr data-preset=(row.preset) data-template=(row.template) data-version=(row.version)
            data-active=(row.active_version) {
            td data-label="Pool" {
                div {
                    strong { (row.template) " / " (row.preset) }
                    br;
                    span.muted { (row.organization) ", version " (row.version) }
                    @if !row.active_version { " " span.badge.draining { "old version, draining" } }
                }
            }
            td.status data-label="Status" { span class=(format!("badge {}", status.replace(' ', "-"))) { (status) } }
            td.desired data-label="Desired" { (row.state.desired) }
            td.running data-label="Running" { (row.state.actual) }
            td.eligible data-label="Eligible" { (row.state.eligible) }
            td.starting data-label="Starting" { (row.state.starting) }
            td.deleting data-label="Deleting" { (row.state.deleting + row.state.stopping) }
            td.activity data-label="Last 1 h / 24 h" {
                div {
                    span.created { "created " (activity(|a| a.created)) } br;
                    span.failed { "failed " (activity(|a| a.failed)) } br;
                    span.claimed { "claimed " (activity(|a| a.claimed)) }
                }
            }
            td.explanation data-label="Explanation" {
                div {
                    span.muted { "target: " } code.target { (row.target) } br;
                    span.muted { "withheld: " } span.withheld { (withheld_text(row.withheld.as_ref())) }
                }
            }
            td.last-failure data-label="Last failure" {
                div {
                    @match &row.last_failure {
                        Some((at, error)) => { span.muted { (at.format("%m-%d %H:%M")) } " " (error) }
                        None => { span.muted { "none in 24 h" } }
                    }
                }
            }
            td.chart-cell data-label="Desired vs eligible, 24 h" { div { (pool_chart(samples, now)) } }
            td.actions {
                @if row.active_version {
                    form method="post" action=(format!("/dashboard/presets/{}/invalidate", row.preset_id)) {
                        input type="hidden" name="csrf" value=(operator.csrf_token);
                        button.invalidate type="submit" data-preset=(row.preset) { "Invalidate" }
                    }
                }
            }
        }
    }
}

/// The status column: paused overrides the preset's own status (nothing is reconciled).
fn status_text(paused: bool, row: &PoolRow) -> &'static str {
    if paused {
        "paused"
    } else if row.status == PresetStatus::ValidationFailed {
        "validation failed"
    } else if row.hard_limited {
        "hard-limited"
    } else {
        "healthy"
    }
}

fn withheld_text(withheld: Option<&Withheld>) -> String {
    let Some(withheld) = withheld else { return "none".to_owned() };
    let reasons: Vec<&str> = withheld
        .reasons
        .iter()
        .map(|reason| match reason {
            WithheldReason::Backoff => "backoff after failures",
            WithheldReason::HardLimited => "hard limit",
            WithheldReason::ValidationFailed => "validation failed",
            WithheldReason::PendingCap => "cap on creates in flight",
        })
        .collect();
    format!("{} create(s): {}", withheld.count, reasons.join(", "))
}

/// `POST /dashboard/pools/pause` (owners).
pub async fn pause(
    state: State<DashboardState>,
    operator: Operator,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Response, DashboardError> {
    switch(state, operator, headers, form, true).await
}

/// `POST /dashboard/pools/resume` (owners).
pub async fn resume(
    state: State<DashboardState>,
    operator: Operator,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Response, DashboardError> {
    switch(state, operator, headers, form, false).await
}

async fn switch(
    State(state): State<DashboardState>,
    operator: Operator,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
    paused: bool,
) -> Result<Response, DashboardError> {
    operator.check_change(&headers, &form_fields(form)?)?;
    operator.require_owner("pause or resume prebuilds")?;
    let actor = Actor::user(operator.user.id, &operator.user.username);
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    set_reconciliation_paused_by(&mut conn, paused, &actor, Utc::now()).await?;
    tracing::info!(user = %operator.user.username, paused, "prebuild reconciliation switched from the dashboard");
    let done = if paused { "paused" } else { "resumed" };
    Ok(Redirect::to(&format!("/dashboard/pools?done={done}")).into_response())
}

/// `POST /dashboard/presets/{id}/invalidate` (owners, template admins).
pub async fn invalidate(
    State(state): State<DashboardState>,
    operator: Operator,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Response, DashboardError> {
    operator.check_change(&headers, &form_fields(form)?)?;
    let preset_id: Uuid =
        id.parse().map_err(|_| DashboardError::bad_input("id", "not a preset id (a UUID)"))?;
    let actor = Actor::user(operator.user.id, &operator.user.username);
    if !invalidate_preset(&state.pool, preset_id, &actor, Utc::now()).await? {
        return Err(DashboardError::NotFound("preset"));
    }
    tracing::info!(user = %operator.user.username, %preset_id, "preset invalidated from the dashboard");
    Ok(Redirect::to("/dashboard/pools?done=invalidated").into_response())
}
