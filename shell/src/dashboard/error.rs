//! What a dashboard request can fail with, answered as a small HTML page (or, signed out, a
//! redirect to the sign-in form).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;

use super::layout;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// No live session: the browser is sent to the sign-in form.
    #[error("not signed in")]
    SignedOut,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A form or path field that does not parse; `field` names it.
    #[error("{field}: {message}")]
    BadInput { field: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DashboardError {
    /// Short stable label (log field).
    pub fn label(&self) -> &'static str {
        match self {
            Self::SignedOut => "signed_out",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::BadInput { .. } => "bad_input",
            Self::Store(err) => err.label(),
        }
    }

    pub fn bad_input(field: &'static str, message: impl Into<String>) -> Self {
        Self::BadInput { field, message: message.into() }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::SignedOut => StatusCode::SEE_OTHER,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadInput { .. } => StatusCode::BAD_REQUEST,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        if matches!(self, Self::SignedOut) {
            return (StatusCode::SEE_OTHER, [(header::LOCATION, "/dashboard/sign-in")])
                .into_response();
        }
        let status = self.status();
        let message = match &self {
            // The database's words stay in the log.
            Self::Store(err) => {
                tracing::warn!(error = %err, kind = err.label(), "dashboard request failed");
                "the database did not answer; try again".to_owned()
            }
            other => other.to_string(),
        };
        let body = html! {
            p.error role="alert" { (message) }
            p { a href="/dashboard/pools" { "Back to the pools" } }
        };
        (status, layout::bare_page(status.canonical_reason().unwrap_or("Error"), body))
            .into_response()
    }
}
