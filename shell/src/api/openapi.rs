//! The OpenAPI 3.1 document, generated from the route table (`super::routes`).

use axum::Json;
use serde_json::{json, Map, Value};

/// The document: one operation per route, bearer auth, the error shape.
pub fn openapi_document() -> Value {
    let mut paths = Map::new();
    for route in super::routes() {
        let parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let public = route.path.ends_with("/openapi.json") || route.path.ends_with("/buildinfo");
        let mut operation = json!({
            "summary": route.summary,
            "operationId": format!("{}_{}", route.method, route.path.trim_start_matches("/api/v1/").replace(['/', '{', '}', '.'], "_")),
            "parameters": parameters,
            "responses": {
                "2XX": {"description": "Success", "content": {"application/json": {}}},
                "4XX": {"description": "Bad input, unauthorized, forbidden or not found",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        if public {
            operation["security"] = json!([]);
        }
        if let Value::Object(entry) =
            paths.entry(route.path.to_owned()).or_insert_with(|| Value::Object(Map::new()))
        {
            entry.insert(route.method.to_owned(), operation);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Poolkeeper API", "version": crate::VERSION},
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}, "field": {"type": "string"}}
            }}
        },
        "paths": paths,
    })
}

pub async fn serve() -> Json<Value> {
    Json(openapi_document())
}
