//! `PUT /api/v1/templates/{org}/{name}`: apply a templates file (TOML or JSON body).

use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::Json;

use super::auth::Caller;
use super::body::{nul_free, read_body, reject_nul};
use super::error::ApiError;
use super::path::PathParams;
use super::ApiState;
use crate::store::templates::{apply_by, ApplyOutcome};
use crate::templates_file::{from_value, toml_value};

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
    Ok(Json(apply_by(&state.pool, &spec, &caller.actor()).await?))
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
