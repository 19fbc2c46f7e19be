//! Request bodies: JSON parsed with the path of the offending field, so that
//! `{"ttl_secs": "x"}` answers `{"field": "ttl_secs"}` rather than a generic 422.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::templates_file::path_error;

/// A JSON body of type `T`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        if let Some(content_type) = content_type {
            if !content_type.starts_with("application/json") {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "expected Content-Type: application/json",
                ));
            }
        }
        let bytes = read_body(req, state).await?;
        Ok(Self(parse_json(&bytes)?))
    }
}

/// The raw body, within the router's size limit (413 beyond it). A declared length over the
/// limit is refused before a byte is read, so a client that waits for `100 Continue`
/// (curl does for large bodies) gets its 413 without sending the body.
pub async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > super::BODY_LIMIT_BYTES as u64) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {} bytes", super::BODY_LIMIT_BYTES),
        ));
    }
    Bytes::from_request(req, state)
        .await
        .map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))
}

/// PostgreSQL text cannot hold a NUL character: refuse it at the edge, naming the field
/// (keys included), rather than fail in the database.
pub fn reject_nul(value: &serde_json::Value) -> Result<(), ApiError> {
    fn walk(value: &serde_json::Value, at: &str) -> Result<(), ApiError> {
        let join = |key: &str| if at.is_empty() { key.to_owned() } else { format!("{at}.{key}") };
        match value {
            serde_json::Value::String(text) => nul_free(at, text),
            serde_json::Value::Array(items) => {
                items.iter().enumerate().try_for_each(|(i, item)| walk(item, &format!("{at}[{i}]")))
            }
            serde_json::Value::Object(map) => map.iter().try_for_each(|(key, item)| {
                nul_free(&join(key), key)?;
                walk(item, &join(key))
            }),
            _ => Ok(()),
        }
    }
    walk(value, "")
}

/// `text` (the value of `field`) without NUL characters.
pub fn nul_free(field: &str, text: &str) -> Result<(), ApiError> {
    if text.contains('\0') {
        return Err(ApiError::bad_request(field, "must not contain a NUL character"));
    }
    Ok(())
}

/// `bytes` as JSON of type `T`; errors name the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: serde_json::Value = serde::Deserialize::deserialize(&mut de)
        .map_err(|err| ApiError::bad_request("", format!("invalid JSON: {err}")))?;
    de.end().map_err(|err| ApiError::bad_request("", format!("invalid JSON: {err}")))?;
    reject_nul(&value)?;
    serde_path_to_error::deserialize(value).map_err(|err| path_error("", err).into())
}
