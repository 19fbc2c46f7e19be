//! `GET /api/v1/audit`: the audit log, newest first, for owners.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::auth::Caller;
use super::body::nul_free;
use super::error::{ApiError, ErrorBody};
use super::ApiState;
use crate::db::models::AuditEntry;
use crate::store::audit::{list, AuditFilter};

/// Default and largest page size.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditJson {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor_id: Option<Uuid>,
    pub actor: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<Uuid>,
    /// `{"old": ..., "new": ...}` or the fields that changed.
    #[schema(value_type = Object)]
    pub diff: serde_json::Value,
}

impl From<AuditEntry> for AuditJson {
    fn from(e: AuditEntry) -> Self {
        Self {
            id: e.id,
            at: e.at,
            actor_id: e.actor_id,
            actor: e.actor,
            action: e.action,
            resource_type: e.resource_type,
            resource_id: e.resource_id,
            diff: e.diff,
        }
    }
}

/// Query parameters, each checked and named on error: `resource_type`, `resource_id`,
/// `actor`, `action`, `since` (RFC 3339), `limit` (1..=1000).
pub fn parse_filter(pairs: &[(String, String)]) -> Result<AuditFilter, ApiError> {
    let mut filter = AuditFilter { limit: DEFAULT_LIMIT, ..AuditFilter::default() };
    for (key, value) in pairs {
        nul_free(key, value)?;
        match key.as_str() {
            "resource_type" => filter.resource_type = Some(value.clone()),
            "actor" => filter.actor = Some(value.clone()),
            "action" => filter.action = Some(value.clone()),
            "resource_id" => {
                let id = value.parse().map_err(|_| ApiError::bad_request(key, "not a UUID"))?;
                filter.resource_id = Some(id);
            }
            "since" => {
                let since = DateTime::parse_from_rfc3339(value)
                    .map_err(|_| ApiError::bad_request(key, "not an RFC 3339 instant"))?;
                filter.since = Some(since.with_timezone(&Utc));
            }
            "limit" => {
                filter.limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| ApiError::bad_request(key, "an integer from 1 to 1000"))?;
            }
            other => return Err(ApiError::bad_request(other, "unknown query parameter")),
        }
    }
    Ok(filter)
}

/// The audit log, newest first (owners).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    params(
        ("resource_type" = Option<String>, Query, description = "Only this resource type (workspace, preset, template, settings, user, api_token, ...)"),
        ("resource_id" = Option<Uuid>, Query, description = "Only this resource"),
        ("actor" = Option<String>, Query, description = "Only this actor: a username, or lifecycle, prebuilds, provisioner, cli"),
        ("action" = Option<String>, Query, description = "Only this action (workspace_claim, user_suspend, token_revoke, ...)"),
        ("since" = Option<DateTime<Utc>>, Query, description = "Only entries at or after this RFC 3339 instant"),
        ("limit" = Option<i64>, Query, description = "At most this many, 1 to 1000 (default 100)"),
    ),
    responses(
        (status = 200, description = "Entries, newest first", body = [AuditJson]),
        (status = 400, description = "A bad query parameter; `field` names it", body = ErrorBody),
        (status = 403, description = "Not an owner", body = ErrorBody),
    ))]
pub async fn list_entries(
    State(state): State<ApiState>,
    caller: Caller,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Vec<AuditJson>>, ApiError> {
    if !caller.is_owner() {
        return Err(ApiError::forbidden("only owners may read the audit log"));
    }
    let Query(pairs) = query.map_err(|err| ApiError::bad_request("", err.body_text()))?;
    let filter = parse_filter(&pairs)?;
    let entries = list(&state.pool, &filter).await?;
    Ok(Json(entries.into_iter().map(AuditJson::from).collect()))
}
