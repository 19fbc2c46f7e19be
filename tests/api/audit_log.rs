//! The audit log: every change made through the API is recorded with its actor and old/new
//! values, in the transaction of the change (a refused change leaves no entry); it is
//! queryable over `GET /api/v1/audit` (owners only) and with `poolkeeper audit list`.

use crate::api_server;
use poolkeeper_tests::cli;

use std::process::ExitCode;

use api_server::TestApi as Api;
use clap::Parser;
use cli::poolkeeper;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use poolkeeper::cli::Cli;
use poolkeeper::db::enums::UserRole;
use poolkeeper::db::schema::{audit_log, presets};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

const EXAMPLE: &str = include_str!("../../examples/templates.toml");

impl Api {
    async fn audit_count(&self) -> i64 {
        let mut conn = self.db.conn().await;
        audit_log::table.count().get_result(&mut conn).await.expect("count")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_changes_are_audited_with_actor_and_diff() {
    let api = Api::start().await;
    let (olga_id, olga) = api.user("olga", UserRole::Owner).await;
    let (_, mo) = api.user("mo", UserRole::Member).await;

    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/workspaces",
            &mo,
            Some(json!({"template": "python-dev", "name": "dev", "ttl_secs": 600})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ws = body["workspace"]["id"].as_str().expect("id").to_owned();
    let put =
        |path: &str, body: Value| (Method::PUT, format!("/api/v1/workspaces/{ws}/{path}"), body);
    for (method, path, body) in [
        put("ttl", json!({"ttl_secs": 3600})),
        put("autostart", json!({"schedule": "CRON_TZ=Europe/Berlin 30 9 * * 1-5"})),
    ] {
        let (status, answer) = api.call(method, &path, &mo, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {answer}");
    }
    // Refused changes leave no entry: a stop while the first build is still pending, and a
    // member pausing the reconciler.
    let before = api.audit_count().await;
    let (status, _) =
        api.call(Method::POST, &format!("/api/v1/workspaces/{ws}/stop"), &mo, None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let pause = Some(json!({"reconciliation_paused": true}));
    let (status, _) = api.call(Method::PUT, "/api/v1/prebuilds/settings", &mo, pause.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(api.audit_count().await, before);

    let (status, _) = api.call(Method::PUT, "/api/v1/prebuilds/settings", &olga, pause).await;
    assert_eq!(status, StatusCode::OK);
    let mut conn = api.db.conn().await;
    let preset: Uuid = presets::table.select(presets::id).first(&mut conn).await.expect("a preset");
    let (status, _) =
        api.call(Method::POST, &format!("/api/v1/presets/{preset}/invalidate"), &olga, None).await;
    assert_eq!(status, StatusCode::OK);

    // Only owners read the log.
    let (status, _) = api.call(Method::GET, "/api/v1/audit", &mo, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) =
        api.call(Method::GET, &format!("/api/v1/audit?resource_id={ws}"), &olga, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows = body.as_array().expect("list");
    let actions: Vec<&str> = rows.iter().filter_map(|r| r["action"].as_str()).collect();
    assert_eq!(
        actions,
        ["workspace_autostart", "workspace_ttl", "workspace_create"],
        "newest first"
    );
    assert!(rows
        .iter()
        .all(|r| r["actor"] == json!("mo") && r["resource_type"] == json!("workspace")));
    assert_eq!(
        (&rows[1]["diff"]["old"]["ttl_secs"], &rows[1]["diff"]["new"]["ttl_secs"]),
        (&json!(600), &json!(3600))
    );
    assert_eq!(rows[0]["diff"]["old"]["autostart_schedule"], Value::Null);
    assert_eq!(
        rows[0]["diff"]["new"]["autostart_schedule"],
        json!("CRON_TZ=Europe/Berlin 30 9 * * 1-5")
    );
    assert!(rows[0]["diff"]["new"]["next_start_at"].is_string());

    let (_, body) = api.call(Method::GET, "/api/v1/audit?actor=olga", &olga, None).await;
    let rows = body.as_array().expect("list");
    let actions: Vec<&str> = rows.iter().filter_map(|r| r["action"].as_str()).collect();
    assert_eq!(actions, ["preset_invalidate", "prebuilds_pause"], "{body}");
    assert!(rows.iter().all(|r| r["actor_id"] == json!(olga_id)));
    assert_eq!((&rows[1]["diff"]["old"], &rows[1]["diff"]["new"]), (&json!(false), &json!(true)));
    assert_eq!(rows[0]["resource_id"], json!(preset));
    assert_eq!(rows[0]["diff"]["old"]["invalidated_at"], Value::Null);

    // Users and tokens made for the test came from the command line's store functions.
    let (_, body) = api.call(Method::GET, "/api/v1/audit?actor=cli&limit=1000", &olga, None).await;
    let actions: Vec<&str> =
        body.as_array().expect("list").iter().filter_map(|r| r["action"].as_str()).collect();
    for action in ["template_apply", "user_create", "token_create"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    let (_, body) = api.call(Method::GET, "/api/v1/audit?limit=2", &olga, None).await;
    assert_eq!(body.as_array().map(Vec::len), Some(2));

    // The same log from the command line.
    let url = api.db.url().to_owned();
    for args in [
        vec!["audit", "list", "--database-url", &url],
        vec![
            "audit",
            "list",
            "--json",
            "--actor",
            "mo",
            "--resource-id",
            &ws,
            "--database-url",
            &url,
        ],
        vec![
            "audit",
            "list",
            "--since",
            "2025-01-01T00:00:00Z",
            "--limit",
            "5",
            "--database-url",
            &url,
        ],
        vec!["notifications", "list", "--database-url", &url],
        vec![
            "notifications",
            "list",
            "--json",
            "--unsent",
            "--kind",
            "workspace_dormant",
            "--database-url",
            &url,
        ],
    ] {
        let shown = args[..2].join(" ");
        assert_eq!(poolkeeper(&args), ExitCode::SUCCESS, "{shown}");
    }
    let args = ["audit", "list", "--since", "yesterday", "--database-url", &url];
    let parsed = Cli::try_parse_from(std::iter::once("poolkeeper").chain(args));
    assert!(parsed.is_err(), "a bad --since is refused before the database is asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_put_is_audited_only_when_it_changes_something() {
    let api = Api::start().await;
    let (_, admin) = api.user("tina", UserRole::TemplateAdmin).await;
    let path = "/api/v1/templates/default/python-dev";
    let toml = Some("application/toml");
    let before = api.audit_count().await;
    let (status, body) = api.send(Method::PUT, path, &admin, toml, Some(EXAMPLE)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(api.audit_count().await, before, "an unchanged file changes nothing");
    let changed =
        EXAMPLE.replace("name = \"v1\"", "name = \"v2\"").replace("instances = 2", "instances = 3");
    let (status, body) = api.send(Method::PUT, path, &admin, toml, Some(&changed)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut conn = api.db.conn().await;
    let (actor, diff): (String, Value) = audit_log::table
        .filter(audit_log::action.eq("template_apply"))
        .order(audit_log::id.desc())
        .select((audit_log::actor, audit_log::diff))
        .first(&mut conn)
        .await
        .expect("entry");
    assert_eq!(actor, "tina");
    assert_eq!(
        (&diff["version"], &diff["outcome"]["version_created"]),
        (&json!("v2"), &json!(true))
    );
}
