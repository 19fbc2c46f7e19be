//! The dashboard's stylesheet and script, compiled into the binary (no CDN, nothing to
//! install beside it).

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

const STYLESHEET: &str = include_str!("assets/dashboard.css");
const SCRIPT: &str = include_str!("assets/dashboard.js");

/// `GET /dashboard/assets/{name}`: public (the sign-in page needs them) and cacheable.
pub async fn serve(Path(name): Path<String>) -> Response {
    let (content_type, body) = match name.as_str() {
        "dashboard.css" => ("text/css; charset=utf-8", STYLESHEET),
        "dashboard.js" => ("text/javascript; charset=utf-8", SCRIPT),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=3600")], body)
        .into_response()
}
