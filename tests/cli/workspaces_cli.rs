//! `poolkeeper workspaces ...` in-process against a test database: a create claims a ready
//! prebuild (or builds fresh), start/stop/delete queue builds, autostart and TTL are validated
//! and stored, and every change is audited as `cli`.

use poolkeeper_tests::cli;
use poolkeeper_tests::seed;

use std::process::ExitCode;

use cli::poolkeeper;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use poolkeeper::db::schema::{audit_log, workspace_builds, workspaces};
use poolkeeper::db::test_db::TestDatabase;
use seed::{t, WorkspaceSeed};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_claims_then_builds_and_changes_are_audited() {
    let db = TestDatabase::new().await;
    let url = db.url().to_owned();
    let mut conn = db.conn().await;
    let (template, version) = seed::template(&mut conn, "go").await;
    let preset = seed::preset(&mut conn, version, "small", 1).await;
    let prebuild = WorkspaceSeed::prebuild(template, version, preset, t("2025-06-02T09:00:00Z"));
    let prebuild = seed::workspace(&mut conn, prebuild).await;
    let alice = seed::user(&mut conn, "alice").await;
    let db_args = ["--database-url", url.as_str()];
    let create = |name: &'static str| {
        let mut args = vec!["workspaces", "create", name, "--owner", "alice", "--template", "go"];
        args.extend(["--preset", "small", "--ttl-secs", "3600"]);
        args.extend(db_args);
        poolkeeper(&args)
    };

    assert_eq!(create("first"), ExitCode::SUCCESS);
    let owner: Uuid = workspaces::table
        .find(prebuild)
        .select(workspaces::owner_id)
        .get_result(&mut conn)
        .await
        .expect("the prebuild");
    assert_eq!(owner, alice, "the ready prebuild was claimed");
    assert_eq!(create("second"), ExitCode::SUCCESS);
    let fresh: Uuid = workspaces::table
        .filter(workspaces::name.eq("second"))
        .select(workspaces::id)
        .get_result(&mut conn)
        .await
        .expect("a fresh workspace");
    assert_ne!(fresh, prebuild);

    // Bad input is refused before anything is written, with exit status 2.
    let mut bad = vec!["workspaces", "create", "third", "--owner", "nobody", "--template", "go"];
    bad.extend(db_args);
    assert_eq!(poolkeeper(&bad), ExitCode::from(2));
    let ws = prebuild.to_string();
    let mut bad_ttl = vec!["workspaces", "ttl", ws.as_str(), "99999999"];
    bad_ttl.extend(db_args);
    assert_eq!(poolkeeper(&bad_ttl), ExitCode::from(2));
    let mut bad_cron = vec!["workspaces", "autostart", ws.as_str(), "whenever"];
    bad_cron.extend(db_args);
    assert_eq!(poolkeeper(&bad_cron), ExitCode::from(2));
    let unknown = uuid::Uuid::new_v4().to_string();
    let mut bad_id = vec!["workspaces", "stop", unknown.as_str()];
    bad_id.extend(db_args);
    assert_eq!(poolkeeper(&bad_id), ExitCode::from(2), "no such workspace");

    let mut autostart = vec!["workspaces", "autostart", ws.as_str(), "30 8 * * 1-5"];
    autostart.extend(db_args);
    assert_eq!(poolkeeper(&autostart), ExitCode::SUCCESS);
    let schedule: Option<String> = workspaces::table
        .find(prebuild)
        .select(workspaces::autostart_schedule)
        .get_result(&mut conn)
        .await
        .expect("workspace");
    assert!(schedule.is_some_and(|s| s.contains("30 8 * * 1-5")));

    // The claim build is still pending (no provisioner runs here): a stop must wait for it.
    let mut stop = vec!["workspaces", "stop", ws.as_str()];
    stop.extend(db_args);
    assert_eq!(poolkeeper(&stop), ExitCode::FAILURE);
    seed::complete_pending_jobs(&mut conn, chrono::Utc::now()).await;
    assert_eq!(poolkeeper(&stop), ExitCode::SUCCESS);
    let latest: String = workspace_builds::table
        .filter(workspace_builds::workspace_id.eq(prebuild))
        .order(workspace_builds::build_number.desc())
        .select(workspace_builds::transition)
        .first::<poolkeeper::db::enums::Transition>(&mut conn)
        .await
        .map(|t| t.to_string())
        .expect("latest build");
    assert_eq!(latest, "stop");

    let mut list = vec!["workspaces", "list", "--owner", "alice", "--json"];
    list.extend(db_args);
    assert_eq!(poolkeeper(&list), ExitCode::SUCCESS);

    // The claim and the fresh build are audited as the user they are for; what the operator
    // changed on someone's workspace, as the command line.
    let audited = async |actor: &str| -> i64 {
        let mut conn = db.conn().await;
        audit_log::table
            .filter(audit_log::actor.eq(actor))
            .filter(audit_log::resource_type.eq("workspace"))
            .count()
            .get_result(&mut conn)
            .await
            .expect("audit")
    };
    assert_eq!(audited("alice").await, 2, "the claim and the fresh create");
    assert_eq!(audited("cli").await, 2, "the autostart change and the stop");
}
