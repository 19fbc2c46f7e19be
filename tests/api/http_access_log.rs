//! Operability of the HTTP surface, without a database: the access log (method, matched
//! route, status, latency, request id), `GET /api/v1/buildinfo` and `poolkeeper_build_info`.

use std::sync::Arc;

use poolkeeper::api::{self, ApiState};
use poolkeeper::daemon::http::{base_router, with_access_log, HttpState};
use poolkeeper::db::pool::{self, PoolConfig};
use poolkeeper::telemetry::Metrics;

#[tokio::test(flavor = "current_thread")]
async fn requests_are_logged_with_route_status_latency_and_request_id() {
    let captured = poolkeeper_tests::CapturedLog::default();
    let writer = captured.clone();
    let subscriber =
        tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // Lazy: nothing connects, and the routes used here need no database.
    let pool = pool::build("postgres://127.0.0.1:1/none", &PoolConfig::default()).expect("pool");
    let state = HttpState::with_metrics(Arc::new(Metrics::new()));
    let router = with_access_log(base_router(state).merge(api::router(ApiState::new(pool))));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::new();

    let response = client.get(format!("{base}/api/v1/buildinfo")).send().await.expect("get");
    assert_eq!(response.status(), 200);
    let generated_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("a request id is returned")
        .to_owned();
    assert!(generated_id.parse::<uuid::Uuid>().is_ok(), "{generated_id}");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body, serde_json::json!({ "version": poolkeeper::VERSION }));

    // A caller's id is kept; the route is the pattern, never the id in the path.
    let workspace = uuid::Uuid::new_v4();
    let response = client
        .get(format!("{base}/api/v1/workspaces/{workspace}"))
        .header("x-request-id", "caller-42")
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers().get("x-request-id").expect("id"), "caller-42");

    let metrics = client.get(format!("{base}/metrics")).send().await.expect("get");
    let metrics = metrics.text().await.expect("text");
    let expected = format!("poolkeeper_build_info{{version=\"{}\"}} 1", poolkeeper::VERSION);
    assert!(metrics.contains(&expected), "{metrics}");

    server.abort();
    let logged = captured.text();
    let line = |needle: &str| {
        logged
            .lines()
            .find(|line| line.contains("http request") && line.contains(needle))
            .unwrap_or_else(|| panic!("no access log line with {needle}:\n{logged}"))
            .to_owned()
    };
    let buildinfo = line("route=/api/v1/buildinfo");
    for field in ["method=GET", "status=200", "latency_ms=", &format!("request_id={generated_id}")]
    {
        assert!(buildinfo.contains(field), "{field} missing: {buildinfo}");
    }
    let denied = line("route=/api/v1/workspaces/{id}");
    assert!(denied.contains("status=401") && denied.contains("request_id=caller-42"), "{denied}");
    assert!(!logged.contains(&workspace.to_string()), "the path's id is not logged: {logged}");
}
