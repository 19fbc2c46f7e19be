//! The list commands print a table by default and one JSON object per line with `-o json`
//! (the binary run as a user runs it, its stdout read back); a missing template exits 2.

use std::process::{Command, Output};

use chrono::{TimeDelta, Utc};
use poolkeeper::db::enums::UserRole;
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::store::auth::{create_token, create_user};
use poolkeeper::store::templates::apply;
use poolkeeper::templates_file::parse_toml;
use serde_json::Value;

const EXAMPLE: &str = include_str!("../../examples/templates.toml");

fn poolkeeper(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_poolkeeper"))
        .args(args)
        .env("POOLKEEPER_DATABASE_URL", url)
        .output()
        .expect("run poolkeeper")
}

/// stdout of a command that must succeed.
fn ok(url: &str, args: &[&str]) -> String {
    let output = poolkeeper(url, args);
    assert!(output.status.success(), "poolkeeper {}: {output:?}", args.join(" "));
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// The JSON lines of `-o json`: every line one object.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).expect("one JSON object per line");
            assert!(value.is_object(), "{line}");
            value
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_commands_print_tables_and_json_lines() {
    let db = TestDatabase::new().await;
    let url = db.url().to_owned();
    apply(db.pool(), &parse_toml(EXAMPLE).expect("example"), chrono::Utc::now())
        .await
        .expect("apply");
    for (name, role) in [("olga", UserRole::Owner), ("mia", UserRole::Member)] {
        create_user(db.pool(), name, role, chrono::Utc::now()).await.expect("user");
        create_token(db.pool(), name, "cli", TimeDelta::days(1), Utc::now()).await.expect("token");
    }

    let table = ok(&url, &["users", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("USERNAME") && lines[0].contains("QUIET HOURS"), "{table}");
    assert!(lines[1].starts_with("mia ") && lines[2].starts_with("olga "), "{table}");
    let users = json_lines(&ok(&url, &["users", "list", "-o", "json"]));
    let names: Vec<&str> = users.iter().filter_map(|u| u["username"].as_str()).collect();
    assert_eq!(names, ["mia", "olga"]);
    assert_eq!(users[1]["role"], "owner");
    assert_eq!(users[0]["quiet_hours_schedule"], Value::Null);

    let tokens = json_lines(&ok(&url, &["tokens", "list", "--output", "json"]));
    assert_eq!(tokens.len(), 2);
    assert!(tokens.iter().all(|t| t["name"] == "cli" && t.get("secret_hash").is_none()));
    let mine = json_lines(&ok(&url, &["tokens", "list", "--user", "mia", "-o", "json"]));
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["username"], "mia");

    let templates = ok(&url, &["templates", "list"]);
    assert!(templates.starts_with("ORGANIZATION"), "{templates}");
    assert!(templates.lines().nth(1).is_some_and(|l| l.contains("python-dev")), "{templates}");
    let templates = json_lines(&ok(&url, &["templates", "list", "-o", "json"]));
    assert_eq!((templates.len(), &templates[0]["presets"]), (1, &Value::from(2)));
    let shown = ok(&url, &["templates", "show", "python-dev"]);
    assert!(
        shown.contains("PRESET") && shown.contains("small") && shown.contains("large"),
        "{shown}"
    );
    let detail = json_lines(&ok(&url, &["templates", "show", "python-dev", "-o", "json"]));
    let presets = detail[0]["active_version"]["presets"].as_array().expect("presets");
    assert_eq!(presets.len(), 2);
    let missing = poolkeeper(&url, &["templates", "show", "nope"]);
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("name: no live template default/nope")
    );

    // Every pool, one row each, under the reconciler's state.
    let status = ok(&url, &["prebuilds", "status"]);
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(lines[0], "prebuild reconciliation: running", "{status}");
    assert!(lines[1].starts_with("TEMPLATE") && lines[1].contains("READY"), "{status}");
    assert_eq!(lines.len(), 4, "two pools: {status}");
    let pools = json_lines(&ok(&url, &["prebuilds", "status", "-o", "json"]));
    assert_eq!(pools.len(), 2);
    assert!(pools.iter().all(|p| p["reconciliation_paused"] == false && p["preset"].is_string()));

    // The older lists take the same flag; the old --json still works.
    assert!(ok(&url, &["workspaces", "list"]).starts_with("ID"));
    let audit = json_lines(&ok(&url, &["audit", "list", "-o", "json"]));
    assert!(audit.iter().any(|e| e["action"] == "user_create"));
    assert_eq!(json_lines(&ok(&url, &["audit", "list", "--json"])).len(), audit.len());
    assert!(ok(&url, &["notifications", "list"]).starts_with("CREATED"));
    let refused = poolkeeper(&url, &["users", "list", "-o", "yaml"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
}
