//! Bearer-token authentication and the role rules (RBAC).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::Utc;

use super::error::ApiError;
use super::ApiState;
use crate::db::enums::UserRole;
use crate::db::models::{User, Workspace};
use crate::db::PREBUILDS_USER_ID;
use crate::store::audit::Actor;

/// The caller, authenticated by `Authorization: Bearer <token>`; 401 otherwise.
#[derive(Debug, Clone)]
pub struct Caller(pub User);

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let secret = bearer_secret(parts).ok_or_else(ApiError::unauthorized)?;
        match state.tokens.authenticate(secret, Utc::now()).await? {
            Some(user) => Ok(Caller(user)),
            None => Err(ApiError::unauthorized()),
        }
    }
}

/// The secret of an `Authorization: Bearer <secret>` header, if there is a non-empty one.
pub(super) fn bearer_secret(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|secret| !secret.is_empty())
}

/// What a caller may do to a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkspaceAction {
    Read,
    /// Start, stop, schedule, TTL, activity.
    Operate,
    Delete,
}

impl Caller {
    pub fn role(&self) -> UserRole {
        self.0.role
    }

    /// The caller as the audit log names it.
    pub fn actor(&self) -> Actor {
        Actor::user(self.0.id, &self.0.username)
    }

    pub fn is_owner(&self) -> bool {
        self.0.role == UserRole::Owner
    }

    /// Owners and template admins manage templates and presets.
    pub fn manages_templates(&self) -> bool {
        matches!(self.0.role, UserRole::Owner | UserRole::TemplateAdmin)
    }

    /// Whether the caller may see `workspace` at all; a workspace it may not see answers 404,
    /// so that the API never tells whether another person's workspace exists.
    pub fn sees(&self, workspace: &Workspace) -> bool {
        match self.0.role {
            UserRole::Owner => true,
            UserRole::TemplateAdmin => {
                workspace.owner_id == self.0.id || workspace.owner_id == PREBUILDS_USER_ID
            }
            UserRole::Member => workspace.owner_id == self.0.id,
        }
    }

    /// 404 when the workspace is not visible, 403 when visible but `action` is not allowed.
    pub fn check(&self, workspace: &Workspace, action: WorkspaceAction) -> Result<(), ApiError> {
        if !self.sees(workspace) {
            return Err(ApiError::not_found("workspace"));
        }
        let own = workspace.owner_id == self.0.id;
        let allowed = match (self.0.role, action) {
            (UserRole::Owner, _) | (_, WorkspaceAction::Read) => true,
            // Template admins may delete prebuilt workspaces (pool maintenance), nothing more.
            (UserRole::TemplateAdmin, WorkspaceAction::Delete) => true,
            (UserRole::TemplateAdmin | UserRole::Member, _) => own,
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::forbidden("your role may not do this to a prebuilt workspace"))
        }
    }
}
