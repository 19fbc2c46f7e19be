//! Workspace agents: `POST .../agents/{agent}/lifecycle` (the agent itself, with its agent
//! token) and `POST .../agents/{agent}/token` (a person who may operate the workspace
//! mints the token the agent then uses).

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::bearer_secret;
use super::auth::{Caller, WorkspaceAction};
use super::body::{nul_free, JsonBody};
use super::error::{ApiError, ErrorBody};
use super::path::PathParams;
use super::ApiState;
use crate::db::enums::AgentLifecycle;
use crate::store::agents::{
    authenticate_agent, issue_token, report_lifecycle, AgentError, AgentIdentity,
};
use crate::store::workspaces as store;

/// The agent, authenticated by `Authorization: Bearer <agent token>`; 401 otherwise.
pub struct AgentCaller(pub AgentIdentity);

impl FromRequestParts<ApiState> for AgentCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let secret = bearer_secret(parts).ok_or_else(agent_unauthorized)?;
        match authenticate_agent(&state.pool, secret).await? {
            Some(agent) => Ok(AgentCaller(agent)),
            None => Err(agent_unauthorized()),
        }
    }
}

fn agent_unauthorized() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "missing, unknown or outdated agent token")
}

impl From<AgentError> for ApiError {
    fn from(err: AgentError) -> Self {
        match err {
            AgentError::NotFound => Self::not_found("agent"),
            AgentError::InvalidTransition { .. } => {
                Self::new(StatusCode::CONFLICT, err.to_string()).at("state")
            }
            AgentError::Store(err) => err.into(),
        }
    }
}

/// The `{id}` and `{agent}` path segments; a bad id names its field.
fn path_ids(
    PathParams((id, agent)): PathParams<(String, String)>,
) -> Result<(Uuid, String), ApiError> {
    let id = id.parse().map_err(|_| ApiError::bad_request("id", "not a UUID"))?;
    nul_free("agent", &agent)?;
    Ok((id, agent))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LifecycleReport {
    pub state: AgentLifecycle,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LifecycleJson {
    pub agent_id: Uuid,
    pub workspace_id: Uuid,
    pub name: String,
    pub old_state: AgentLifecycle,
    pub state: AgentLifecycle,
}

/// An agent reports its lifecycle state (agent token auth, not a person's token).
#[utoipa::path(post, path = "/api/v1/workspaces/{id}/agents/{agent}/lifecycle", tag = "agents",
    params(
        ("id" = Uuid, Path, description = "The workspace's id"),
        ("agent" = String, Path, description = "The agent's name"),
    ),
    request_body = LifecycleReport,
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "The state moved (or was repeated)", body = LifecycleJson),
        (status = 400, description = "A bad path segment or body; `field` names it", body = ErrorBody),
        (status = 401, description = "A missing, unknown or outdated agent token", body = ErrorBody),
        (status = 404, description = "Not this token's agent", body = ErrorBody),
        (status = 409, description = "Not a transition from the current state", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
    ))]
pub async fn lifecycle(
    State(state): State<ApiState>,
    AgentCaller(agent): AgentCaller,
    path: PathParams<(String, String)>,
    JsonBody(body): JsonBody<LifecycleReport>,
) -> Result<Json<LifecycleJson>, ApiError> {
    let (workspace_id, name) = path_ids(path)?;
    // An agent speaks only for itself: any other agent, existing or not, is "not found".
    if workspace_id != agent.workspace_id || name != agent.name {
        return Err(ApiError::not_found("agent"));
    }
    let reported = report_lifecycle(&state.pool, &agent, body.state, Utc::now()).await?;
    Ok(Json(LifecycleJson {
        agent_id: agent.agent_id,
        workspace_id,
        name,
        old_state: reported.old,
        state: reported.new,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentTokenJson {
    pub agent_id: Uuid,
    /// Shown once; the agent sends it as its bearer token.
    pub token: String,
}

/// Mint a new token for an agent of the latest build (shown once; the previous one stops
/// working); whoever may start or stop the workspace.
#[utoipa::path(post, path = "/api/v1/workspaces/{id}/agents/{agent}/token", tag = "agents",
    params(
        ("id" = Uuid, Path, description = "The workspace's id"),
        ("agent" = String, Path, description = "The agent's name"),
    ),
    responses(
        (status = 201, description = "The new token", body = AgentTokenJson),
        (status = 400, description = "A bad path segment", body = ErrorBody),
        (status = 403, description = "Your role may not operate this prebuilt workspace", body = ErrorBody),
        (status = 404, description = "No such workspace or agent, or not yours to see", body = ErrorBody),
    ))]
pub async fn token(
    State(state): State<ApiState>,
    caller: Caller,
    path: PathParams<(String, String)>,
) -> Result<(StatusCode, Json<AgentTokenJson>), ApiError> {
    let (workspace_id, name) = path_ids(path)?;
    let view = store::get(&state.pool, workspace_id).await?;
    caller.check(&view.workspace, WorkspaceAction::Operate)?;
    let (agent_id, token) =
        issue_token(&state.pool, workspace_id, &name, &caller.actor(), Utc::now()).await?;
    Ok((StatusCode::CREATED, Json(AgentTokenJson { agent_id, token })))
}
