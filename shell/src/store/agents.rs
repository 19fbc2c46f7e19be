//! Workspace agents as the API sees them: per-agent tokens (only a SHA-256 is stored, as
//! for API tokens) and lifecycle reports, which follow the agent state machine below.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use poolkeeper_core::agent::{transition_allowed, AgentState};
use uuid::Uuid;

use super::audit::{self, Actor, Change};
use super::auth::hash_secret;
use super::workspaces::latest_build;
use super::StoreError;
use crate::db::enums::AgentLifecycle;
use crate::db::schema::{workspace_agents, workspace_builds, workspaces};
use crate::db::DbPool;

/// The agent a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    pub agent_id: Uuid,
    pub workspace_id: Uuid,
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The workspace has no live agent of that name on its latest build.
    #[error("agent not found")]
    NotFound,
    #[error("an agent cannot go from {from} to {to}")]
    InvalidTransition { from: AgentLifecycle, to: AgentLifecycle },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AgentError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::InvalidTransition { .. } => "invalid_transition",
            Self::Store(err) => err.label(),
        }
    }
}

impl From<diesel::result::Error> for AgentError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Store(StoreError::Query(err))
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for AgentError {
    fn from(err: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        Self::Store(err.into())
    }
}

/// A fresh agent secret: `pka_` and 244 random bits.
pub fn new_agent_token() -> String {
    format!("pka_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

/// The agent `name` of the latest build of live workspace `workspace_id`, locked.
async fn lock_current(
    conn: &mut AsyncPgConnection,
    workspace_id: Uuid,
    name: &str,
) -> Result<Option<(Uuid, AgentLifecycle)>, diesel::result::Error> {
    let (Some(build), _) = latest_build(conn, workspace_id).await? else { return Ok(None) };
    workspace_agents::table
        .filter(workspace_agents::build_id.eq(build.id))
        .filter(workspace_agents::name.eq(name))
        .select((workspace_agents::id, workspace_agents::lifecycle_state))
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// Gives agent `name` of the workspace's latest build a new token (the old one stops
/// working) and returns the secret, which is shown once. `NotFound` when there is no such
/// agent (or the workspace is gone).
pub async fn issue_token(
    pool: &DbPool,
    workspace_id: Uuid,
    name: &str,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<(Uuid, String), AgentError> {
    let mut conn = pool.get().await?;
    conn.transaction::<_, AgentError, _>(async |conn| {
        let Some((agent_id, _)) = lock_current(conn, workspace_id, name).await? else {
            return Err(AgentError::NotFound);
        };
        let secret = new_agent_token();
        diesel::update(workspace_agents::table.find(agent_id))
            .set((
                workspace_agents::auth_token_hash.eq(hash_secret(&secret)),
                workspace_agents::updated_at.eq(now),
            ))
            .execute(conn)
            .await?;
        let change = Change {
            action: "agent_token",
            resource_type: "workspace_agent",
            resource_id: Some(agent_id),
            diff: serde_json::json!({ "workspace_id": workspace_id, "name": name }),
        };
        audit::record(conn, now, actor, change).await?;
        Ok((agent_id, secret))
    })
    .await
}

/// The agent whose token is `secret`, if it is an agent of the latest build of a live
/// workspace: an agent of a replaced build has nothing left to report.
pub async fn authenticate_agent(
    pool: &DbPool,
    secret: &str,
) -> Result<Option<AgentIdentity>, StoreError> {
    let mut conn = pool.get().await?;
    let row: Option<(Uuid, Uuid, String, i32)> = workspace_agents::table
        .inner_join(workspace_builds::table.inner_join(workspaces::table))
        .filter(workspace_agents::auth_token_hash.eq(hash_secret(secret)))
        .filter(workspaces::deleted.eq(false))
        .select((
            workspace_agents::id,
            workspaces::id,
            workspace_agents::name,
            workspace_builds::build_number,
        ))
        .first(&mut conn)
        .await
        .optional()?;
    let Some((agent_id, workspace_id, name, build_number)) = row else { return Ok(None) };
    let latest: Option<i32> = workspace_builds::table
        .filter(workspace_builds::workspace_id.eq(workspace_id))
        .select(diesel::dsl::max(workspace_builds::build_number))
        .first(&mut conn)
        .await?;
    Ok((latest == Some(build_number)).then_some(AgentIdentity { agent_id, workspace_id, name }))
}

/// What a lifecycle report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported {
    pub old: AgentLifecycle,
    pub new: AgentLifecycle,
}

/// Records that `agent` is now in `state`, if the state machine allows it; a change is
/// audited in the same transaction.
pub async fn report_lifecycle(
    pool: &DbPool,
    agent: &AgentIdentity,
    state: AgentLifecycle,
    now: DateTime<Utc>,
) -> Result<Reported, AgentError> {
    let mut conn = pool.get().await?;
    let reported = conn
        .transaction::<_, AgentError, _>(async |conn| {
            // Re-read under the lock: the build may have been replaced since authentication.
            let Some((agent_id, old)) = lock_current(conn, agent.workspace_id, &agent.name).await?
            else {
                return Err(AgentError::NotFound);
            };
            if agent_id != agent.agent_id {
                return Err(AgentError::NotFound);
            }
            if !transition_allowed(AgentState::from(old), AgentState::from(state)) {
                return Err(AgentError::InvalidTransition { from: old, to: state });
            }
            if old == state {
                return Ok(Reported { old, new: state });
            }
            let ready_at = (state == AgentLifecycle::Ready).then_some(now);
            diesel::update(workspace_agents::table.find(agent_id))
                .set((
                    workspace_agents::lifecycle_state.eq(state),
                    workspace_agents::updated_at.eq(now),
                ))
                .execute(conn)
                .await?;
            if let Some(ready_at) = ready_at {
                diesel::update(workspace_agents::table.find(agent_id))
                    .set(workspace_agents::ready_at.eq(ready_at))
                    .execute(conn)
                    .await?;
            }
            let change = Change {
                action: "agent_lifecycle",
                resource_type: "workspace_agent",
                resource_id: Some(agent_id),
                diff: serde_json::json!({
                    "workspace_id": agent.workspace_id,
                    "name": agent.name,
                    "old": { "lifecycle_state": old },
                    "new": { "lifecycle_state": state },
                }),
            };
            audit::record(conn, now, &Actor::system(&format!("agent:{}", agent.name)), change)
                .await?;
            Ok(Reported { old, new: state })
        })
        .await?;
    tracing::info!(agent_id = %agent.agent_id, workspace_id = %agent.workspace_id,
        old = %reported.old, new = %reported.new, "agent lifecycle reported");
    Ok(reported)
}

/// Agents of simulated builds still `starting`: (id, created_at, the version's source), for
/// the worker to judge which are due.
pub async fn starting_simulated_agents(
    conn: &mut AsyncPgConnection,
) -> Result<Vec<(Uuid, DateTime<Utc>, serde_json::Value)>, diesel::result::Error> {
    use crate::db::enums::ProvisionerKind;
    use crate::db::schema::template_versions;
    workspace_agents::table
        .inner_join(workspace_builds::table.inner_join(template_versions::table))
        .filter(workspace_agents::lifecycle_state.eq(AgentLifecycle::Starting))
        .filter(template_versions::provisioner.eq(ProvisionerKind::Simulated))
        .select((workspace_agents::id, workspace_agents::created_at, template_versions::source))
        .load(conn)
        .await
}

/// Flips the agents of `ids` that are still `starting` to `ready`; returns how many were.
pub async fn mark_agents_ready(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<usize, diesel::result::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    diesel::update(
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
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stored_state_has_a_distinct_core_state() {
        let mapped: std::collections::HashSet<AgentState> =
            AgentLifecycle::ALL.iter().map(|&s| AgentState::from(s)).collect();
        assert_eq!(mapped.len(), AgentLifecycle::ALL.len());
        assert_eq!(mapped.len(), AgentState::ALL.len());
    }
}
