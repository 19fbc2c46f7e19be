//! `/api/v1/openapi.json` is a valid OpenAPI 3.1 document derived from the handlers' types:
//! it parses as utoipa's model, every `$ref` resolves, it holds every route of the router and
//! nothing else, every operation has typed bodies, and what a route answers to bad input
//! (no token, a bad id, malformed JSON, the wrong content type, an oversized body) is a
//! status its operation declares. (`api_rbac.rs` checks the same for every role.)

use crate::api_server;

use std::collections::BTreeSet;

use api_server::TestApi;
use poolkeeper::api::routes;
use poolkeeper::db::enums::UserRole;
use reqwest::{Method, StatusCode};
use serde_json::Value;

async fn document(api: &TestApi) -> Value {
    let response = api.client.get(api.url("/api/v1/openapi.json")).send().await.expect("get");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("JSON")
}

/// Every `$ref` in `value`, with where it was found.
fn refs<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                match (key.as_str(), item) {
                    ("$ref", Value::String(target)) => out.push((at.clone(), target)),
                    _ => refs(item, format!("{at}/{key}"), out),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                refs(item, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    &doc["paths"][path][method]
}

fn declares(doc: &Value, method: &str, path: &str, status: StatusCode) -> bool {
    operation(doc, method, path)["responses"][status.as_str()].is_object()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_valid_and_covers_every_route() {
    let api = TestApi::start().await;
    let doc = document(&api).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let parsed: utoipa::openapi::OpenApi =
        serde_json::from_value(doc.clone()).expect("utoipa's OpenAPI model reads it");
    assert_eq!(parsed.info.title, "Poolkeeper API");

    let mut found = Vec::new();
    refs(&doc, String::new(), &mut found);
    assert!(found.len() > 20, "the bodies are typed: {} refs", found.len());
    for (at, target) in &found {
        let pointer = target.strip_prefix('#').expect("a local reference");
        assert!(doc.pointer(pointer).is_some(), "{at}: {target} does not resolve");
    }

    // The router's routes, exactly.
    let served: BTreeSet<(String, String)> =
        routes().iter().map(|r| (r.method.to_owned(), r.path.clone())).collect();
    let mut documented = BTreeSet::new();
    let mut operation_ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            documented.insert((method.clone(), path.clone()));
            let id = op["operationId"].as_str().expect("an operationId");
            assert!(operation_ids.insert(id.to_owned()), "operationId {id} twice");
        }
    }
    assert_eq!(documented, served);

    for (method, path) in &served {
        let op = operation(&doc, method, path);
        let responses = op["responses"].as_object().expect("responses");
        let success = responses
            .iter()
            .find(|(status, _)| status.starts_with('2'))
            .unwrap_or_else(|| panic!("{method} {path}: no 2xx"));
        let schema = &success.1["content"]["application/json"]["schema"];
        assert!(schema.is_object(), "{method} {path}: an untyped success");
        for (status, response) in responses.iter().filter(|(s, _)| !s.starts_with('2')) {
            let schema = &response["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path} {status}");
        }
        if let Some(body) = op.get("requestBody") {
            let content = body["content"].as_object().expect("content");
            assert!(content.values().all(|c| c["schema"].is_object()), "{method} {path}");
        }
        // Path parameters are declared, each once.
        let declared: Vec<&str> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str()).collect()
            })
            .unwrap_or_default();
        let in_path: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        assert_eq!(declared, in_path, "{method} {path}");
    }
    println!(
        "openapi: {} operations, {} refs resolved, {} schemas, violations: 0",
        served.len(),
        found.len(),
        doc["components"]["schemas"].as_object().map_or(0, |s| s.len())
    );
}

/// The status of a request that declares a body over the limit: the server answers from the
/// `Content-Length` alone, so the body is never sent (sending it races the server's close).
async fn oversized_status(api: &TestApi, method: &str, path: &str, token: &str) -> StatusCode {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(api.addr).await.expect("connect");
    let head = format!(
        "{} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        method.to_uppercase(),
        api.addr,
        poolkeeper::api::BODY_LIMIT_BYTES + 1
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let mut buf = [0_u8; 4096];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "connection closed before a status line");
        answer.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&answer);
    let code = line.split(' ').nth(1).and_then(|c| c.parse::<u16>().ok()).expect("a status line");
    StatusCode::from_u16(code).expect("a status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_route_answers_to_bad_input_is_declared() {
    let api = TestApi::start().await;
    let doc = document(&api).await;
    let (_, owner) = api.user("olga", UserRole::Owner).await;
    let mut probes = 0;
    let mut undeclared = Vec::new();
    for route in routes() {
        let method = Method::from_bytes(route.method.to_uppercase().as_bytes()).expect("method");
        let concrete = |id: &str| {
            route
                .path
                .replace("{id}", id)
                .replace("{agent}", "main")
                .replace("{org}", "default")
                .replace("{name}", "python-dev")
                .replace("{user}", "me")
        };
        let good = concrete(&uuid::Uuid::new_v4().to_string());
        let takes_json = operation(&doc, route.method, &route.path)["requestBody"]["content"]
            ["application/json"]
            .is_object();
        let mut requests: Vec<(&str, reqwest::RequestBuilder)> = vec![
            ("no token", api.client.request(method.clone(), api.url(&good))),
            ("a token", api.client.request(method.clone(), api.url(&good)).bearer_auth(&owner)),
        ];
        if route.path.contains("{id}") {
            let bad = concrete("not-a-uuid");
            requests.push((
                "a bad id",
                api.client.request(method.clone(), api.url(&bad)).bearer_auth(&owner),
            ));
        }
        if takes_json {
            let with = |content_type: &str, body: String| {
                api.client
                    .request(method.clone(), api.url(&good))
                    .bearer_auth(&owner)
                    .header("content-type", content_type)
                    .body(body)
            };
            requests.push(("malformed JSON", with("application/json", "{".to_owned())));
            requests.push(("a wrong type", with("application/json", "[1]".to_owned())));
            if !route.path.starts_with("/api/v1/templates/") {
                requests.push(("not JSON", with("text/plain", "x".to_owned())));
            }
        }
        if takes_json {
            let status = oversized_status(&api, route.method, &good, &owner).await;
            probes += 1;
            if !declares(&doc, route.method, &route.path, status) {
                undeclared.push(format!(
                    "{} {} with an oversized body: {status}",
                    route.method, route.path
                ));
            }
        }
        for (what, request) in requests {
            let status = request.send().await.expect("send").status();
            probes += 1;
            if !declares(&doc, route.method, &route.path, status) {
                undeclared.push(format!("{} {} with {what}: {status}", route.method, route.path));
            }
        }
    }
    assert!(undeclared.is_empty(), "answers the document does not declare: {undeclared:#?}");
    println!("openapi probes: {probes} answers, each declared, violations: 0");
}
