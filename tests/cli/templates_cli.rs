//! `poolkeeper templates apply`, `users create` and `tokens create`, run in-process against a
//! test database (each command builds a runtime of its own, so it runs on a plain thread).

use poolkeeper_tests::cli;

use std::process::ExitCode;

use cli::poolkeeper;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use poolkeeper::db::schema::{api_tokens, template_versions, users};
use poolkeeper::db::test_db::TestDatabase;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_apply_users_and_tokens() {
    let db = TestDatabase::new().await;
    let url = db.url().to_owned();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/templates.toml");
    assert_eq!(
        poolkeeper(&["templates", "apply", example, "--database-url", &url]),
        ExitCode::SUCCESS
    );
    assert_eq!(
        poolkeeper(&["templates", "apply", example, "--database-url", &url]),
        ExitCode::SUCCESS
    );
    let mut conn = db.conn().await;
    let versions: i64 =
        template_versions::table.count().get_result(&mut conn).await.expect("count");
    assert_eq!(versions, 1, "re-applying an unchanged file is a no-op");

    let dir = std::env::temp_dir().join(format!("pk-templates-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad = dir.join("bad.toml");
    let text = std::fs::read_to_string(example).expect("example");
    std::fs::write(
        &bad,
        text.replace("timezone = \"Europe/Berlin\"", "timezone = \"Nowhere/City\""),
    )
    .expect("write");
    let bad = bad.to_string_lossy().into_owned();
    assert_eq!(
        poolkeeper(&["templates", "apply", &bad, "--database-url", &url]),
        ExitCode::from(2)
    );

    assert_eq!(
        poolkeeper(&[
            "users",
            "create",
            "--username",
            "ada",
            "--role",
            "template-admin",
            "--database-url",
            &url
        ]),
        ExitCode::SUCCESS
    );
    assert_eq!(
        poolkeeper(&["users", "create", "--username", "ada", "--database-url", &url]),
        ExitCode::from(2),
        "duplicate user"
    );
    assert_eq!(
        poolkeeper(&["tokens", "create", "--user", "ada", "--database-url", &url]),
        ExitCode::SUCCESS
    );
    assert_eq!(
        poolkeeper(&["tokens", "create", "--user", "nobody", "--database-url", &url]),
        ExitCode::from(2)
    );
    let tokens: i64 = api_tokens::table
        .inner_join(users::table)
        .filter(users::username.eq("ada"))
        .count()
        .get_result(&mut conn)
        .await
        .expect("count");
    assert_eq!(tokens, 1);
}
