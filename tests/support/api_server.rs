//! The harness of the tests that talk real HTTP: the API on an ephemeral loopback port over a
//! fresh test database with the example templates file applied, and a client for it.
//! (Included with `#[path]` by the API tests' binary, so that a test file may add its own
//! `impl TestApi` helpers.)
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use poolkeeper::api::{router, ApiState};
use poolkeeper::db::enums::UserRole;
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::store::auth::{create_token, create_user};
use poolkeeper::store::templates::apply;
use poolkeeper::telemetry::metrics::Metrics;
use poolkeeper::templates_file::parse_toml;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

const EXAMPLE: &str = include_str!("../../examples/templates.toml");

pub struct TestApi {
    pub db: TestDatabase,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    /// The registry the server records its API metrics in.
    pub metrics: Arc<Metrics>,
}

impl TestApi {
    pub async fn start() -> TestApi {
        let db = TestDatabase::new().await;
        apply(db.pool(), &parse_toml(EXAMPLE).expect("example"), chrono::Utc::now())
            .await
            .expect("apply");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics = Arc::new(Metrics::new());
        let app = router(ApiState::new(db.pool().clone()).with_metrics(metrics.clone()));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client =
            reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        TestApi { db, addr, client, metrics }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A user of `role` and a bearer token for it.
    pub async fn user(&self, username: &str, role: UserRole) -> (Uuid, String) {
        let user =
            create_user(self.db.pool(), username, role, chrono::Utc::now()).await.expect("user");
        let (token, _) =
            create_token(self.db.pool(), username, "test", TimeDelta::days(1), Utc::now())
                .await
                .expect("token");
        (user.id, token)
    }

    /// `body` as JSON, with `token` as the bearer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as(method, path, Some(token), body).await
    }

    /// [`TestApi::call`] with no bearer at all when `token` is `None`.
    pub async fn call_as(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.request(method, path, token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request).await
    }

    /// `body` sent as-is with `content_type`, for what a JSON value cannot express.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        content_type: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self.request(method, path, Some(token));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(body) = body {
            request = request.body(body.to_owned());
        }
        answer(request).await
    }

    fn request(&self, method: Method, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let request = self.client.request(method, self.url(path));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }
}

/// The status and the body as JSON (a body that is not JSON comes back as a JSON string).
async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("request");
    let status = response.status();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}
