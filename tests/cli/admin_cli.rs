//! `poolkeeper users suspend|activate|set-quiet-hours` and `tokens revoke`, run in-process
//! against a test database: what they write is what the rules read (the lifecycle loader's
//! owner status, the deadline computation's quiet hours), bad input exits 2 and writes
//! nothing, and every change is audited as `cli`.

use poolkeeper_tests::cli;
use poolkeeper_tests::provisioner_seed as seed;

use std::process::ExitCode;

use chrono::{TimeDelta, Utc};
use cli::poolkeeper;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use poolkeeper::db::enums::{Transition, UserRole};
use poolkeeper::db::models::WorkspaceBuild;
use poolkeeper::db::schema::{audit_log, templates, users, workspace_builds};
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::provisioner::backend::{AgentSpec, BuildOutput};
use poolkeeper::provisioner::{acquire_next_job, complete_job, JobResult};
use poolkeeper::store::auth::{authenticate, create_token, create_user};
use poolkeeper::store::lifecycle::load_lifecycle_snapshot;
use poolkeeper::store::tokens::list_tokens;
use poolkeeper_core::lifecycle::OwnerStatus;
use seed::TemplateSpec;

use poolkeeper_tests::seed::t;

async fn audited(db: &TestDatabase, action: &str) -> Vec<String> {
    let mut conn = db.conn().await;
    audit_log::table
        .filter(audit_log::action.eq(action))
        .order(audit_log::id)
        .select(audit_log::actor)
        .load(&mut conn)
        .await
        .expect("audit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_and_suspension_reach_the_rules() {
    let db = TestDatabase::new().await;
    let url = db.url().to_owned();
    let mut conn = db.conn().await;
    let bob = seed::user(&mut conn, "bob", None).await;
    let spec = TemplateSpec {
        autostop_requirement_days: vec!["sat".to_owned()],
        ..TemplateSpec::default()
    };
    let (template, version) = seed::template(&mut conn, "dev", spec).await;
    // The lifecycle loader skips a template without an active version.
    diesel::update(templates::table.find(template))
        .set(templates::active_version_id.eq(version))
        .execute(&mut conn)
        .await
        .expect("activate the version");
    let ws = seed::workspace(&mut conn, bob, template, "ws", 30 * 86400, None).await;
    let (build, _) = seed::build(&mut conn, ws, version, bob, 1, Transition::Start, None).await;
    let db_args = ["--database-url", url.as_str()];
    let run = |args: &[&str]| poolkeeper(&[args, &db_args[..]].concat());

    // Bad input: a weekly schedule, an unknown zone, an unknown user; nothing is written.
    let quiet = "CRON_TZ=America/New_York 0 2 * * *";
    assert_eq!(run(&["users", "set-quiet-hours", "bob", "0 2 * * 1"]), ExitCode::from(2));
    assert_eq!(
        run(&["users", "set-quiet-hours", "bob", "CRON_TZ=Nowhere 0 2 * * *"]),
        ExitCode::from(2)
    );
    assert_eq!(run(&["users", "set-quiet-hours", "nobody", quiet]), ExitCode::from(2));
    assert_eq!(run(&["users", "suspend", "nobody"]), ExitCode::from(2));
    assert!(audited(&db, "user_quiet_hours").await.is_empty(), "a refusal writes nothing");

    // Quiet hours 02:00 in New York (06:00Z in June) with a required stop on Saturdays: the
    // completed build's max deadline is at bob's quiet hours, not the default midnight UTC.
    assert_eq!(run(&["users", "set-quiet-hours", "bob", quiet]), ExitCode::SUCCESS);
    let stored: Option<String> = users::table
        .find(bob)
        .select(users::quiet_hours_schedule)
        .get_result(&mut conn)
        .await
        .expect("user");
    assert_eq!(stored.as_deref(), Some(quiet));
    let monday_nine = t("2025-06-02T09:00:00Z");
    let job = acquire_next_job(&mut conn, "w", monday_nine).await.expect("acquire").expect("a job");
    let output = BuildOutput {
        state: None,
        agents: vec![AgentSpec { name: "main".to_owned(), start_secs: 0 }],
    };
    let done = complete_job(&mut conn, job.id, "w", &JobResult::Succeeded(output), monday_nine)
        .await
        .expect("complete");
    assert!(done.is_some());
    let row: WorkspaceBuild = workspace_builds::table
        .find(build)
        .select(WorkspaceBuild::as_select())
        .get_result(&mut conn)
        .await
        .expect("build");
    assert_eq!(row.max_deadline, Some(t("2025-06-07T06:00:00Z")));

    // Back to the default: the column is NULL again, which the completion reads as midnight UTC.
    assert_eq!(run(&["users", "set-quiet-hours", "bob", "--default"]), ExitCode::SUCCESS);
    let stored: Option<String> = users::table
        .find(bob)
        .select(users::quiet_hours_schedule)
        .get_result(&mut conn)
        .await
        .expect("user");
    assert_eq!(stored, None);

    // Suspension is what the lifecycle loader hands the rules.
    let owner_status = async |conn: &mut diesel_async::AsyncPgConnection| {
        let snapshot = load_lifecycle_snapshot(conn, Utc::now()).await.expect("snapshot");
        snapshot.workspaces.iter().find(|w| w.id == ws).expect("bob's workspace").owner_status
    };
    assert_eq!(owner_status(&mut conn).await, OwnerStatus::Active);
    assert_eq!(run(&["users", "suspend", "bob"]), ExitCode::SUCCESS);
    assert_eq!(owner_status(&mut conn).await, OwnerStatus::Suspended);
    assert_eq!(run(&["users", "suspend", "bob"]), ExitCode::SUCCESS, "suspending twice is fine");
    assert_eq!(run(&["users", "activate", "bob"]), ExitCode::SUCCESS);
    assert_eq!(owner_status(&mut conn).await, OwnerStatus::Active);

    assert_eq!(audited(&db, "user_quiet_hours").await, ["cli", "cli"]);
    assert_eq!(audited(&db, "user_suspend").await, ["cli"], "a no-op is not audited");
    assert_eq!(audited(&db, "user_activate").await, ["cli"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_stops_working_at_once() {
    let db = TestDatabase::new().await;
    let url = db.url().to_owned();
    create_user(db.pool(), "ada", UserRole::Member, chrono::Utc::now()).await.expect("user");
    let (secret, _) = create_token(db.pool(), "ada", "laptop", TimeDelta::days(1), Utc::now())
        .await
        .expect("token");
    assert!(authenticate(db.pool(), &secret, Utc::now()).await.expect("auth").is_some());
    let tokens = list_tokens(db.pool(), None).await.expect("tokens");
    assert_eq!(tokens.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["laptop"]);
    let id = tokens[0].id.to_string();

    let db_args = ["--database-url", url.as_str()];
    let run = |args: &[&str]| poolkeeper(&[args, &db_args[..]].concat());
    assert_eq!(run(&["tokens", "list", "--user", "nobody"]), ExitCode::from(2));
    assert_eq!(run(&["tokens", "revoke", &id]), ExitCode::SUCCESS);
    assert!(authenticate(db.pool(), &secret, Utc::now()).await.expect("auth").is_none());
    assert!(list_tokens(db.pool(), None).await.expect("tokens").is_empty());
    assert_eq!(run(&["tokens", "revoke", &id]), ExitCode::from(2), "already revoked");
    assert_eq!(audited(&db, "token_revoke").await, ["cli"]);
}
