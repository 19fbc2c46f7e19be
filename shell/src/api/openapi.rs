//! The OpenAPI 3.1 document, built from the route table (`super::routes`): each route's
//! operation and schemas come from its handler's `#[utoipa::path]` annotation and the
//! `ToSchema` types it names. What every authenticated operation shares (bearer auth, 401,
//! 500) is added here once.

use axum::Json;
use utoipa::openapi::path::Paths;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, RefOr, Response,
    ResponseBuilder,
};
use utoipa::ToSchema;

use super::error::ErrorBody;

/// The document.
pub fn openapi() -> OpenApi {
    let mut paths = Paths::new();
    let mut schemas = Vec::new();
    for route in super::routes() {
        let mut operation = (route.operation)();
        // utoipa names an operation after its function, and several are called `list`: the
        // method and path make the id unique (`get_workspaces_id`).
        operation.operation_id = Some(operation_id(route.method, &route.path));
        // No `security` of its own: the document's default, a person's bearer token.
        if operation.security.is_none() {
            operation.responses.responses.entry("401".to_owned()).or_insert_with(|| {
                error_response("A missing, unknown or expired bearer token, or a suspended user")
            });
        }
        let public = operation.security.as_ref().is_some_and(|s| {
            s.iter().all(|requirement| *requirement == SecurityRequirement::default())
        });
        if !public {
            operation.responses.responses.entry("500".to_owned()).or_insert_with(|| {
                error_response("An internal error; the body says nothing about the database")
            });
        }
        paths.add_path_operation(&route.path, vec![route.http_method.clone()], operation);
        (route.schemas)(&mut schemas);
    }
    let bearer = || SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas)
        .schema(ErrorBody::name(), <ErrorBody as utoipa::PartialSchema>::schema())
        .security_scheme("bearer", bearer())
        .security_scheme("agent_token", bearer())
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Poolkeeper API")
                .version(crate::VERSION)
                .description(Some("Workspaces, prebuild pools, templates, users and tokens."))
                .build(),
        )
        .paths(paths)
        .components(Some(components))
        .security(Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]))
        .build()
}

fn operation_id(method: &str, path: &str) -> String {
    let words: Vec<&str> = path
        .trim_start_matches("/api/v1/")
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| !word.is_empty())
        .collect();
    format!("{method}_{}", words.join("_"))
}

fn error_response(description: &str) -> RefOr<Response> {
    let schema = RefOr::Ref(utoipa::openapi::Ref::from_schema_name(ErrorBody::name()));
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(schema)).build())
        .build()
        .into()
}

/// The document as JSON.
pub fn openapi_document() -> serde_json::Value {
    // A document of plain data always serializes; `Null` would fail every test that reads it.
    serde_json::to_value(openapi()).unwrap_or(serde_json::Value::Null)
}

/// This document (OpenAPI 3.1, JSON).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub async fn serve() -> Json<serde_json::Value> {
    Json(openapi_document())
}
