//! Simulated agents that are still starting become ready once their start time has passed.
//! The due time is derived from the agent's `created_at` (its build's completion) and the
//! version's `agent_start_secs`, so the sweep needs no state of its own and survives a
//! worker restart.

use chrono::{DateTime, TimeDelta, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::backend::simulated::agent_start_secs;
use super::backend::SimulatedConfig;
use super::ProvisionerError;
use crate::db::enums::{AgentLifecycle, ProvisionerKind};
use crate::db::schema::{template_versions, workspace_agents, workspace_builds};

/// Mark every due `starting` simulated agent `ready`; returns how many were flipped.
pub async fn flip_due_agents(
    conn: &mut AsyncPgConnection,
    config: &SimulatedConfig,
    now: DateTime<Utc>,
) -> Result<usize, ProvisionerError> {
    let starting: Vec<(Uuid, DateTime<Utc>, serde_json::Value)> = workspace_agents::table
        .inner_join(workspace_builds::table.inner_join(template_versions::table))
        .filter(workspace_agents::lifecycle_state.eq(AgentLifecycle::Starting))
        .filter(template_versions::provisioner.eq(ProvisionerKind::Simulated))
        .select((workspace_agents::id, workspace_agents::created_at, template_versions::source))
        .load(conn)
        .await?;
    let due: Vec<Uuid> = starting
        .into_iter()
        .filter(|(_, created_at, source)| {
            let secs = i64::try_from(agent_start_secs(config, source)).unwrap_or(i64::MAX);
            TimeDelta::try_seconds(secs)
                .and_then(|start| created_at.checked_add_signed(start))
                .is_some_and(|due| due <= now)
        })
        .map(|(id, _, _)| id)
        .collect();
    mark_agents_ready(conn, &due, now).await
}

/// Flips the agents of `ids` that are still `starting` to `ready`; returns how many were.
pub async fn mark_agents_ready(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<usize, ProvisionerError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let flipped = diesel::update(
        workspace_agents::table
            .filter(workspace_agents::id.eq_any(ids))
            .filter(workspace_agents::lifecycle_state.eq(AgentLifecycle::Starting)),
    )
    .set((
        workspace_agents::lifecycle_state.eq(AgentLifecycle::Ready),
        workspace_agents::ready_at.eq(now),
        workspace_agents::updated_at.eq(now),
    ))
    .execute(conn)
    .await?;
    Ok(flipped)
}
