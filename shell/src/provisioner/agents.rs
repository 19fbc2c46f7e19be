//! Simulated agents that are still starting become ready once their start time has passed.
//! The due time is derived from the agent's `created_at` (its build's completion) and the
//! version's `agent_start_secs`, so the sweep needs no state of its own and survives a
//! worker restart.

use chrono::{DateTime, TimeDelta, Utc};
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use super::backend::simulated::agent_start_secs;
use super::backend::SimulatedConfig;
use super::ProvisionerError;
use crate::store::agents::starting_simulated_agents;

/// Mark every due `starting` simulated agent `ready`; returns how many were flipped.
pub async fn flip_due_agents(
    conn: &mut AsyncPgConnection,
    config: &SimulatedConfig,
    now: DateTime<Utc>,
) -> Result<usize, ProvisionerError> {
    let starting = starting_simulated_agents(conn).await?;
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
    Ok(crate::store::agents::mark_agents_ready(conn, ids, now).await?)
}
