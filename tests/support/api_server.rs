//! The API on an ephemeral loopback port, over `db`, with the example templates file applied;
//! returns its base URL and a client (for tests that talk real HTTP).

use std::time::Duration;

use poolkeeper::api::{router, ApiState};
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::store::templates::apply;
use poolkeeper::templates_file::parse_toml;

const EXAMPLE: &str = include_str!("../../examples/templates.toml");

pub async fn serve_example(db: &TestDatabase) -> (String, reqwest::Client) {
    apply(db.pool(), &parse_toml(EXAMPLE).expect("example")).await.expect("apply");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = router(ApiState::new(db.pool().clone()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    (format!("http://{addr}"), client)
}
