//! `/api/v1/templates`: list the live templates, show one, and apply a templates file (TOML
//! or JSON body) with `PUT /api/v1/templates/{org}/{name}`.

use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::Json;

use super::auth::Caller;
use super::body::{nul_free, read_body, reject_nul};
use super::error::{ApiError, ErrorBody};
use super::path::PathParams;
use super::ApiState;
use crate::store::template_views::{
    list_templates, show_template, TemplateDetail, TemplateSummary,
};
use crate::store::templates::{apply_by, ApplyOutcome};
use crate::templates_file::{from_value, toml_value};

/// Every live template, by organization and name.
#[utoipa::path(get, path = "/api/v1/templates", tag = "templates",
    responses((status = 200, description = "Live templates", body = [TemplateSummary])))]
pub async fn list(
    State(state): State<ApiState>,
    _caller: Caller,
) -> Result<Json<Vec<TemplateSummary>>, ApiError> {
    Ok(Json(list_templates(&state.pool).await?))
}

/// One template: its lifecycle settings and its active version's presets and schedules.
#[utoipa::path(get, path = "/api/v1/templates/{org}/{name}", tag = "templates",
    params(
        ("org" = String, Path, description = "Organization name"),
        ("name" = String, Path, description = "Template name"),
    ),
    responses(
        (status = 200, description = "The template", body = TemplateDetail),
        (status = 400, description = "A bad path segment", body = ErrorBody),
        (status = 404, description = "No such live template", body = ErrorBody),
    ))]
pub async fn show(
    State(state): State<ApiState>,
    _caller: Caller,
    PathParams((organization, name)): PathParams<(String, String)>,
) -> Result<Json<TemplateDetail>, ApiError> {
    nul_free("org", &organization)?;
    nul_free("name", &name)?;
    show_template(&state.pool, &organization, &name)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("template"))
}

/// Apply a templates file, TOML or JSON (owners, template admins): an unchanged file is a
/// no-op, a changed one a new active version.
#[utoipa::path(put, path = "/api/v1/templates/{org}/{name}", tag = "templates",
    params(
        ("org" = String, Path, description = "Organization name"),
        ("name" = String, Path, description = "Template name"),
    ),
    request_body(description = "The templates file", content(
        (String = "application/toml"),
        (Object = "application/json"),
    )),
    responses(
        (status = 200, description = "What the apply changed", body = ApplyOutcome),
        (status = 400, description = "An invalid file; `field` names the offending field", body = ErrorBody),
        (status = 403, description = "Neither owner nor template admin", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
    ))]
pub async fn put(
    State(state): State<ApiState>,
    caller: Caller,
    PathParams((organization, name)): PathParams<(String, String)>,
    request: Request,
) -> Result<Json<ApplyOutcome>, ApiError> {
    if !caller.manages_templates() {
        return Err(ApiError::forbidden("only owners and template admins may change templates"));
    }
    let is_json = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let bytes = read_body(request, &state).await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::bad_request("", "the body is not UTF-8"))?;
    let mut value = if is_json {
        serde_json::from_str(text)
            .map_err(|err| ApiError::bad_request("", format!("invalid JSON: {err}")))?
    } else {
        toml_value(text)?
    };
    nul_free("template.organization", &organization)?;
    nul_free("template.name", &name)?;
    reject_nul(&value)?;
    place(&mut value, &organization, &name)?;
    // Parse, then apply: the whole file is validated before the store sees it.
    let spec = from_value(value)?;
    Ok(Json(apply_by(&state.pool, &spec, &caller.actor(), chrono::Utc::now()).await?))
}

/// The path names the template: the body may repeat it, but not contradict it.
fn place(value: &mut serde_json::Value, organization: &str, name: &str) -> Result<(), ApiError> {
    let Some(template) = value.get_mut("template").and_then(|t| t.as_object_mut()) else {
        return Err(ApiError::bad_request("template", "missing the [template] table"));
    };
    for (key, wanted) in [("organization", organization), ("name", name)] {
        match template.get(key) {
            Some(serde_json::Value::String(given)) if given != wanted => {
                return Err(ApiError::bad_request(
                    format!("template.{key}"),
                    format!("{given:?} contradicts the URL's {wanted:?}"),
                ));
            }
            _ => {
                template.insert(key.to_owned(), serde_json::Value::String(wanted.to_owned()));
            }
        }
    }
    Ok(())
}
