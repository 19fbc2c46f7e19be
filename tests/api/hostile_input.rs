//! Hostile input through real HTTP: malformed JSON, wrong types, huge bodies, invalid
//! UUIDs and SQL meta-characters. Every answer is a 4xx naming the field (never a 5xx),
//! and text that reaches the database is stored verbatim.

use crate::api_server;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use poolkeeper::api::BODY_LIMIT_BYTES;
use poolkeeper::db::enums::UserRole;
use poolkeeper::db::schema::{presets, provisioner_jobs, templates};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use api_server::TestApi;

const EXAMPLE: &str = include_str!("../../examples/templates.toml");

/// The API with an owner's token that every request carries.
struct Api {
    server: TestApi,
    token: String,
}

impl Api {
    async fn start() -> Api {
        let server = TestApi::start().await;
        let (_, token) = server.user("root", UserRole::Owner).await;
        Api { server, token }
    }

    /// `body` sent as-is with `content_type`; the answer as JSON (or a JSON string).
    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        self.server.send(method, path, &self.token, content_type, body).await
    }

    async fn json(&self, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
        self.send(method, path, Some("application/json"), Some(body)).await
    }
}

/// A 4xx whose body is the API's error shape and, when given, names `field`.
fn assert_rejected(what: &str, (status, body): &(StatusCode, Value), field: Option<&str>) {
    assert!(status.is_client_error(), "{what}: {status} {body}");
    assert!(body["error"].is_string(), "{what}: not the error shape: {body}");
    if let Some(field) = field {
        assert_eq!(body["field"].as_str(), Some(field), "{what}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_and_wrong_types_are_4xx_naming_the_field() {
    let api = Api::start().await;
    let ws = Uuid::new_v4();
    let json_routes = [
        (Method::POST, "/api/v1/workspaces".to_owned()),
        (Method::PUT, format!("/api/v1/workspaces/{ws}/autostart")),
        (Method::PUT, format!("/api/v1/workspaces/{ws}/ttl")),
        (Method::PUT, "/api/v1/prebuilds/settings".to_owned()),
    ];
    let malformed =
        ["{not json", "", "{\"a\":", "[1,2", "\u{0}", "{\"ttl_secs\": 1} trailing", "nul"];
    // Nesting beyond the parser's recursion limit is bad input, not a crash.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for (method, path) in &json_routes {
        for body in malformed.iter().copied().chain([deep.as_str()]) {
            let answer = api.json(method.clone(), path, body).await;
            let shown: String = body.chars().take(20).collect();
            assert_rejected(&format!("{method} {path} {shown:?}"), &answer, None);
        }
        // A JSON value of the wrong shape (not an object) is a 400 too.
        for body in ["[]", "null", "42", "\"text\""] {
            let answer = api.json(method.clone(), path, body).await;
            assert_rejected(&format!("{method} {path} {body}"), &answer, None);
            assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{method} {path} {body}");
        }
    }
    let wrong_types: Vec<(Method, String, Value, &str)> = vec![
        (
            Method::POST,
            "/api/v1/workspaces".into(),
            json!({"template": 7, "name": "a"}),
            "template",
        ),
        (
            Method::POST,
            "/api/v1/workspaces".into(),
            json!({"template": "python-dev", "name": ["a"]}),
            "name",
        ),
        (
            Method::POST,
            "/api/v1/workspaces".into(),
            json!({"template": "python-dev", "name": "a", "ttl_secs": 1.5}),
            "ttl_secs",
        ),
        (
            Method::POST,
            "/api/v1/workspaces".into(),
            json!({"template": "python-dev", "name": "a", "ttl_secs": 9.3e18}),
            "ttl_secs",
        ),
        (
            Method::POST,
            "/api/v1/workspaces".into(),
            json!({"template": "python-dev", "name": "a", "ttl_secs": u64::MAX}),
            "ttl_secs",
        ),
        (
            Method::POST,
            "/api/v1/workspaces".into(),
            json!({"template": "python-dev", "name": "a", "parameters": []}),
            "parameters",
        ),
        (
            Method::POST,
            "/api/v1/workspaces".into(),
            json!({"template": "python-dev", "name": "a", "autostart_schedule": false}),
            "autostart_schedule",
        ),
        (
            Method::POST,
            "/api/v1/workspaces".into(),
            json!({"template": "python-dev", "name": "a\u{0}b"}),
            "name",
        ),
        (
            Method::POST,
            "/api/v1/workspaces".into(),
            json!({"template": "python-dev", "name": "x".repeat(10_000)}),
            "name",
        ),
        (
            Method::PUT,
            format!("/api/v1/workspaces/{ws}/ttl"),
            json!({"ttl_secs": "8h"}),
            "ttl_secs",
        ),
        (Method::PUT, format!("/api/v1/workspaces/{ws}/ttl"), json!({"ttl_secs": -5}), "ttl_secs"),
        (Method::PUT, format!("/api/v1/workspaces/{ws}/ttl"), json!({}), "ttl_secs"),
        (
            Method::PUT,
            format!("/api/v1/workspaces/{ws}/autostart"),
            json!({"schedule": 930}),
            "schedule",
        ),
        (
            Method::PUT,
            format!("/api/v1/workspaces/{ws}/autostart"),
            json!({"schedule": "CRON_TZ=Mars/Olympus 0 9 * * *"}),
            "schedule",
        ),
        (
            Method::PUT,
            "/api/v1/prebuilds/settings".into(),
            json!({"reconciliation_paused": "yes"}),
            "reconciliation_paused",
        ),
        (Method::PUT, "/api/v1/prebuilds/settings".into(), json!({"paused": true}), "paused"),
    ];
    let huge: Vec<(Method, String, Value, &str)> = vec![
        (
            Method::POST,
            "/api/v1/workspaces".into(),
            json!({"template": "python-dev", "name": "a", "ttl_secs": i64::MAX}),
            "ttl_secs",
        ),
        (
            Method::PUT,
            format!("/api/v1/workspaces/{ws}/ttl"),
            json!({"ttl_secs": i64::MAX}),
            "ttl_secs",
        ),
        (
            Method::PUT,
            format!("/api/v1/workspaces/{ws}/ttl"),
            json!({"ttl_secs": 30 * 86400 + 1}),
            "ttl_secs",
        ),
    ];
    // PostgreSQL text cannot hold NUL: refused at the edge wherever text reaches a query.
    let nul: Vec<(Method, String, Value, &str)> = vec![
        (
            Method::POST,
            "/api/v1/workspaces".into(),
            json!({"template": "py\u{0}", "name": "a"}),
            "template",
        ),
        (
            Method::POST,
            "/api/v1/workspaces".into(),
            json!({"template": "python-dev", "organization": "\u{0}", "name": "a"}),
            "organization",
        ),
        (
            Method::POST,
            "/api/v1/workspaces".into(),
            json!({"template": "python-dev", "preset": "s\u{0}", "name": "a"}),
            "preset",
        ),
        (
            Method::POST,
            "/api/v1/workspaces".into(),
            json!({"template": "python-dev", "name": "a", "parameters": {"k": "v\u{0}"}}),
            "parameters.k",
        ),
        (
            Method::POST,
            "/api/v1/workspaces".into(),
            json!({"template": "python-dev", "name": "a", "parameters": {"k\u{0}": "v"}}),
            "parameters.k\u{0}",
        ),
    ];
    let wrong_types = wrong_types.into_iter().chain(huge).chain(nul);
    for (method, path, body, field) in wrong_types {
        let answer = api.json(method.clone(), &path, &body.to_string()).await;
        let shown: String = body.to_string().chars().take(80).collect();
        assert_rejected(&format!("{method} {path} {shown}"), &answer, Some(field));
    }
    // A body that is not JSON at all, declared as something else.
    let answer =
        api.send(Method::POST, "/api/v1/workspaces", Some("text/plain"), Some("template=x")).await;
    assert_rejected("text/plain body", &answer, None);
    // Templates files: bad TOML, bad JSON, not UTF-8.
    for (content_type, body) in [
        ("application/toml", "[template\nname ="),
        ("application/json", "{\"template\": "),
        ("application/toml", "[template]\nname = \"\u{fffd}\u{0}\""),
    ] {
        let answer = api
            .send(
                Method::PUT,
                "/api/v1/templates/default/python-dev",
                Some(content_type),
                Some(body),
            )
            .await;
        assert_rejected(&format!("templates {content_type} {body:?}"), &answer, None);
    }
    let answer = api
        .send(Method::PUT, "/api/v1/templates/default/%FF", Some("application/toml"), Some(EXAMPLE))
        .await;
    assert_rejected("template name not UTF-8", &answer, Some("name"));
    let bytes = vec![0xff_u8, 0xfe, 0x00, 0x80];
    let response = api
        .server
        .client
        .put(api.server.url("/api/v1/templates/default/python-dev"))
        .bearer_auth(&api.token)
        .header("content-type", "application/toml")
        .body(bytes)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_uuids_are_400_naming_id() {
    let api = Api::start().await;
    let bad_ids = [
        "not-a-uuid",
        "1",
        "00000000-0000-0000-0000-00000000000g",
        "%27%3B%20DROP%20TABLE%20workspaces%3B%20--",
        "%00",
        // Not UTF-8 once percent-decoded.
        "%FF",
        "%C3%28",
        "12345678-1234-1234-1234-1234567890123",
    ];
    let long = "a".repeat(4000);
    for id in bad_ids.iter().copied().chain([long.as_str()]) {
        let routes = [
            (Method::GET, format!("/api/v1/workspaces/{id}"), None),
            (Method::POST, format!("/api/v1/workspaces/{id}/start"), None),
            (Method::POST, format!("/api/v1/workspaces/{id}/stop"), None),
            (Method::DELETE, format!("/api/v1/workspaces/{id}"), None),
            (Method::PUT, format!("/api/v1/workspaces/{id}/ttl"), Some(r#"{"ttl_secs": 60}"#)),
            (
                Method::PUT,
                format!("/api/v1/workspaces/{id}/autostart"),
                Some(r#"{"schedule": null}"#),
            ),
            (Method::POST, format!("/api/v1/workspaces/{id}/activity"), None),
            (Method::POST, format!("/api/v1/workspaces/{id}/agents/main/token"), None),
            (Method::POST, format!("/api/v1/presets/{id}/invalidate"), None),
            (Method::GET, format!("/api/v1/audit?resource_id={id}"), None),
        ];
        for (method, path, body) in routes {
            let answer =
                api.send(method.clone(), &path, body.map(|_| "application/json"), body).await;
            let shown: String = path.chars().take(80).collect();
            let field = if path.contains("audit") { "resource_id" } else { "id" };
            assert_rejected(&format!("{method} {shown}"), &answer, Some(field));
            assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{method} {shown}");
        }
    }
    let ws = Uuid::new_v4();
    let answer = api
        .send(Method::POST, &format!("/api/v1/workspaces/{ws}/agents/a%00b/token"), None, None)
        .await;
    assert_rejected("NUL agent name", &answer, Some("agent"));
    let answer = api
        .send(
            Method::PUT,
            "/api/v1/templates/default/a%00b",
            Some("application/toml"),
            Some(EXAMPLE),
        )
        .await;
    assert_rejected("NUL template name", &answer, Some("template.name"));
    let answer = api.send(Method::GET, "/api/v1/audit?actor=a%00b", None, None).await;
    assert_rejected("NUL actor", &answer, Some("actor"));
    // Audit query parameters are checked one by one too.
    for (query, field) in [
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("limit=99999999999999999999", "limit"),
        ("since=yesterday", "since"),
        ("colour=red", "colour"),
    ] {
        let answer = api.send(Method::GET, &format!("/api/v1/audit?{query}"), None, None).await;
        assert_rejected(query, &answer, Some(field));
    }
}

/// Sends `Content-Length: declared` with `Expect: 100-continue` and no body, as curl does for
/// large uploads, and returns the status line the server answers with.
async fn declared_length_status(api: &Api, method: &str, path: &str, declared: usize) -> String {
    let mut stream = tokio::net::TcpStream::connect(api.server.addr).await.expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {declared}\r\n\
         Expect: 100-continue\r\n\r\n",
        api.server.addr, api.token
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let mut buf = [0_u8; 4096];
    // The status line arrives without the body ever being sent.
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "connection closed before a status line");
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_bodies_are_413() {
    let api = Api::start().await;
    for (method, path) in [
        ("POST", "/api/v1/workspaces"),
        ("PUT", "/api/v1/templates/default/python-dev"),
        ("PUT", "/api/v1/prebuilds/settings"),
    ] {
        let status = declared_length_status(&api, method, path, BODY_LIMIT_BYTES + 1).await;
        assert!(status.contains(" 413 "), "{method} {path}: {status}");
    }
    // Within the limit the server asks for the body (100 Continue): the limit, not a
    // blanket refusal, is what answered above.
    let status = declared_length_status(&api, "POST", "/api/v1/workspaces", 64).await;
    assert!(status.contains(" 100 "), "{status}");
    // A large body that fits is parsed (and refused for its content, not its size).
    let big_name = "n".repeat(BODY_LIMIT_BYTES / 2);
    let body = json!({"template": "python-dev", "name": big_name}).to_string();
    let answer = api.json(Method::POST, "/api/v1/workspaces", &body).await;
    assert_rejected("half-limit name", &answer, Some("name"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_meta_characters_are_stored_verbatim() {
    let api = Api::start().await;
    let hostile = "o'brien\"; DROP TABLE templates; -- \\ % _ $1 \u{e9}";
    // A template named by the URL path; the body leaves the name to the path.
    let file = EXAMPLE.replace("name = \"python-dev\"\n", "");
    let path = format!("/api/v1/templates/default/{}", url_escape(hostile));
    let hostile_preset = "small'); DELETE FROM presets; --";
    let file = file.replace("name = \"small\"", &format!("name = {}", toml_string(hostile_preset)));
    let (status, body) = api.send(Method::PUT, &path, Some("application/toml"), Some(&file)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut conn = api.server.db.conn().await;
    let names: Vec<String> = templates::table
        .select(templates::name)
        .order(templates::name)
        .load(&mut conn)
        .await
        .expect("templates");
    assert!(names.contains(&hostile.to_owned()), "{names:?}");
    assert!(names.contains(&"python-dev".to_owned()), "the other template survives: {names:?}");
    let preset_names: Vec<String> =
        presets::table.select(presets::name).load(&mut conn).await.expect("presets");
    assert!(preset_names.contains(&hostile_preset.to_owned()), "{preset_names:?}");

    // A claim on it: parameter names and values reach the job input unchanged.
    let value = "'; UPDATE users SET role = 'owner'; --";
    let request = json!({
        "template": hostile,
        "preset": hostile_preset,
        "name": "ws-1",
        "parameters": {"q'uote": value},
    });
    let (status, body) = api.json(Method::POST, "/api/v1/workspaces", &request.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let inputs: Vec<Value> = provisioner_jobs::table
        .select(provisioner_jobs::input)
        .load(&mut conn)
        .await
        .expect("jobs");
    assert!(inputs.iter().any(|input| input["parameters"]["q'uote"] == json!(value)), "{inputs:?}");
    // Meta-characters in filters match literally: nothing, not everything.
    for query in ["actor=%27%20OR%201%3D1%20--", "action=%25", "resource_type=_%25"] {
        let (status, body) =
            api.send(Method::GET, &format!("/api/v1/audit?{query}"), None, None).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        assert_eq!(body, json!([]), "{query}");
    }
    // And the audit log names the hostile template verbatim.
    let (status, body) =
        api.send(Method::GET, "/api/v1/audit?action=template_apply&limit=10", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.as_array()
            .is_some_and(|rows| rows.iter().any(|r| r["diff"]["name"] == json!(hostile))),
        "{body}"
    );
}

/// Percent-encodes everything but unreserved characters.
fn url_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A TOML basic string (JSON's escaping is valid TOML for these characters).
fn toml_string(text: &str) -> String {
    serde_json::to_string(text).expect("string")
}
