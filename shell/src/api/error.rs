//! API errors: `{"error": "...", "field": "..."}` with a 4xx status for bad input, and a
//! 500 whose body says nothing about the database.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::store::claim::ClaimError;
use crate::store::templates::ApplyError;
use crate::store::workspaces::WorkspaceError;
use crate::store::StoreError;
use crate::templates_file::FieldError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<String>,
}

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What is wrong, for a person.
    pub error: String,
    /// The offending field or parameter (`ttl_secs`, `after`, `template.name`), when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), field: None }
    }

    pub fn at(mut self, field: impl Into<String>) -> Self {
        let field = field.into();
        self.field = if field.is_empty() { None } else { Some(field) };
        self
    }

    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message).at(field)
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "missing, unknown or expired bearer token")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// Also the answer for what exists but the caller may not see: never leak existence.
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }

    fn internal(label: &'static str, err: &dyn std::fmt::Display) -> Self {
        tracing::error!(kind = label, error = %err, "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: self.message, field: self.field };
        (self.status, Json(body)).into_response()
    }
}

impl From<FieldError> for ApiError {
    fn from(err: FieldError) -> Self {
        Self::bad_request(err.field, err.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        Self::internal(err.label(), &err)
    }
}

impl From<ApplyError> for ApiError {
    fn from(err: ApplyError) -> Self {
        match err {
            ApplyError::Invalid(err) => err.into(),
            ApplyError::Store(err) => err.into(),
        }
    }
}

impl From<WorkspaceError> for ApiError {
    fn from(err: WorkspaceError) -> Self {
        match err {
            WorkspaceError::NotFound => Self::not_found("workspace"),
            WorkspaceError::BuildInProgress(_) => Self::new(StatusCode::CONFLICT, err.to_string()),
            WorkspaceError::NotAllowed(message) => Self::new(StatusCode::CONFLICT, message),
            WorkspaceError::Store(err) => err.into(),
        }
    }
}

impl From<ClaimError> for ApiError {
    fn from(err: ClaimError) -> Self {
        match err {
            ClaimError::TemplateNotFound => Self::not_found("template").at("template"),
            ClaimError::PresetNotFound => Self::bad_request("preset", err.to_string()),
            ClaimError::TemplateUnavailable(message) => {
                Self::new(StatusCode::CONFLICT, message).at("template")
            }
            ClaimError::NameTaken(_) => Self::new(StatusCode::CONFLICT, err.to_string()).at("name"),
            // Retrying is safe: a claim that was made makes the retry's name taken.
            ClaimError::CommitFailed(_) => {
                tracing::error!(kind = err.label(), error = %err, "request failed");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
            }
            ClaimError::Store(err) => err.into(),
        }
    }
}
