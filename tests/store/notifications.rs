//! The notification outbox against a real PostgreSQL: each event notifies once (not once
//! per cycle), and only when the transaction that makes the change commits.

use poolkeeper_tests::seed;

use chrono::{DateTime, TimeDelta, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use poolkeeper::db::enums::{JobStatus, ProvisionerKind, Transition, UserRole};
use poolkeeper::db::schema::template_versions;
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::provisioner::context::load_context;
use poolkeeper::provisioner::{
    acquire_next_job, complete_job, Backends, CancellationToken, Completion, JobResult,
    TerraformConfig,
};
use poolkeeper::store::auth::create_user;
use poolkeeper::store::claim::{claim_or_create, ClaimRequest};
use poolkeeper::store::lifecycle::{apply_lifecycle_decision, load_lifecycle_snapshot, Applied};
use poolkeeper::store::notifications::{list, NotificationFilter};
use poolkeeper::store::prebuilds::{apply_preset_plan, load_prebuild_snapshot};
use poolkeeper::store::templates::find_template;
use poolkeeper_core::lifecycle::plan as lifecycle_plan;
use poolkeeper_core::prebuilds::plan as prebuild_plan;
use seed::{t, WorkspaceSeed, CONFIG};
use uuid::Uuid;

/// Fails any statement that writes an audit entry with `action`: the audit entry comes
/// after the notification in the same transaction, so the notification must roll back too.
async fn fail_audit_of(conn: &mut AsyncPgConnection, action: &str) {
    let sql = format!(
        "CREATE FUNCTION test_fail_audit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'injected failure'; END $$;
         CREATE TRIGGER test_fail_audit BEFORE INSERT ON audit_log FOR EACH ROW
         WHEN (NEW.action = '{action}') EXECUTE FUNCTION test_fail_audit();"
    );
    conn.batch_execute(&sql).await.expect("install failing trigger");
}

async fn stop_failing(conn: &mut AsyncPgConnection) {
    conn.batch_execute(
        "DROP TRIGGER test_fail_audit ON audit_log; DROP FUNCTION test_fail_audit();",
    )
    .await
    .expect("drop failing trigger");
}

async fn notes(db: &TestDatabase, kind: &str) -> Vec<poolkeeper::store::notifications::Listed> {
    let filter =
        NotificationFilter { kind: Some(kind.to_owned()), limit: 100, ..Default::default() };
    list(db.pool(), &filter).await.expect("list")
}

async fn lifecycle_cycle(db: &TestDatabase, now: DateTime<Utc>) -> Vec<Applied> {
    let mut conn = db.conn().await;
    let snapshot = load_lifecycle_snapshot(&mut conn, now).await.expect("load");
    let mut applied = Vec::new();
    for decision in lifecycle_plan(now, &snapshot) {
        applied.push(
            apply_lifecycle_decision(db.pool(), &seed::lead(db, "lifecycle").await, now, &decision)
                .await
                .expect("apply"),
        );
    }
    applied
}

#[tokio::test]
async fn dormancy_notifies_once_and_only_when_committed() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template_id, version_id) = seed::template(&mut conn, "go").await;
    let alice = seed::user(&mut conn, "alice").await;
    let person = |created_at| WorkspaceSeed {
        owner_id: alice,
        template_id,
        version_id,
        preset_id: None,
        transition: Transition::Stop,
        status: JobStatus::Succeeded,
        created_at,
        ready: true,
    };
    let first = seed::workspace(&mut conn, person(t("2025-06-01T08:00:00Z"))).await;
    conn.batch_execute("UPDATE templates SET time_til_dormant_secs = 3600").await.expect("ttd");
    let now = t("2025-06-02T12:00:00Z");

    // The audit entry of the cycle fails: no dormancy, and no notification either.
    fail_audit_of(&mut conn, "lifecycle").await;
    let snapshot = load_lifecycle_snapshot(&mut conn, now).await.expect("load");
    let decisions = lifecycle_plan(now, &snapshot);
    assert!(decisions[0].mark_dormant.is_some(), "{decisions:?}");
    assert!(apply_lifecycle_decision(
        db.pool(),
        &seed::lead(&db, "lifecycle").await,
        now,
        &decisions[0]
    )
    .await
    .is_err());
    assert!(notes(&db, "workspace_dormant").await.is_empty(), "rolled back with its change");
    let dormant = "SELECT count(*) AS n FROM workspaces WHERE dormant_at IS NOT NULL";
    assert_eq!(seed::count(&mut conn, dormant).await, 0);
    stop_failing(&mut conn).await;

    // Committed: one notification, however many cycles follow.
    lifecycle_cycle(&db, now).await;
    for minute in 1..4 {
        lifecycle_cycle(&db, now + TimeDelta::minutes(minute)).await;
    }
    let found = notes(&db, "workspace_dormant").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].notification.user_id, alice);
    assert_eq!(found[0].notification.payload["workspace_id"], serde_json::json!(first));

    // A second workspace of hers going dormant the same day is news of its own: each
    // notice names the workspace that will be deleted (deduplicated per workspace and day).
    let second = seed::workspace(&mut conn, person(t("2025-06-01T09:00:00Z"))).await;
    lifecycle_cycle(&db, now + TimeDelta::minutes(10)).await;
    assert_eq!(seed::count(&mut conn, dormant).await, 2);
    let found = notes(&db, "workspace_dormant").await;
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found
        .iter()
        .any(|n| n.notification.payload["workspace_id"] == serde_json::json!(second)));
    // The next day is a new day.
    seed::workspace(&mut conn, person(t("2025-06-02T09:00:00Z"))).await;
    lifecycle_cycle(&db, now + TimeDelta::days(1)).await;
    assert_eq!(notes(&db, "workspace_dormant").await.len(), 3);
}

#[tokio::test]
async fn autostart_onto_a_new_version_notifies_the_owner() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template_id, v1) = seed::template(&mut conn, "go").await;
    let bob = seed::user(&mut conn, "bob").await;
    let ws = seed::workspace(
        &mut conn,
        WorkspaceSeed::owned(bob, template_id, v1, Transition::Stop, t("2025-06-02T08:00:00Z")),
    )
    .await;
    let v2 = seed::version(&mut conn, template_id, "v2").await;
    conn.batch_execute(&format!(
        "UPDATE workspaces SET autostart_schedule = '0 9 * * *', automatic_updates = 'always'
         WHERE id = '{ws}'"
    ))
    .await
    .expect("schedule");
    let now = t("2025-06-02T09:30:00Z");
    let applied = lifecycle_cycle(&db, now).await;
    assert!(matches!(applied[..], [Applied::Done { job_id: Some(_), .. }]), "{applied:?}");
    let found = notes(&db, "workspace_autoupdated").await;
    assert_eq!(found.len(), 1, "{found:?}");
    let payload = &found[0].notification.payload;
    assert_eq!(
        (
            &payload["workspace_id"],
            &payload["old_template_version_id"],
            &payload["template_version_id"]
        ),
        (&serde_json::json!(ws), &serde_json::json!(v1), &serde_json::json!(v2))
    );
    // The start is in flight: later cycles decide nothing and notify nothing.
    lifecycle_cycle(&db, now + TimeDelta::minutes(1)).await;
    assert_eq!(notes(&db, "workspace_autoupdated").await.len(), 1);
}

async fn reconcile(db: &TestDatabase, at: DateTime<Utc>) {
    let mut conn = db.conn().await;
    let snap = load_prebuild_snapshot(&mut conn, at, CONFIG).await.expect("load").snapshot;
    for (preset, preset_plan) in snap.presets.iter().zip(prebuild_plan(at, &snap)) {
        apply_preset_plan(db.pool(), &seed::lead(db, "prebuilds").await, at, preset, &preset_plan)
            .await
            .expect("apply");
    }
}

#[tokio::test]
async fn hard_limit_notifies_template_admins_once_per_episode() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let admin = create_user(db.pool(), "tina", UserRole::TemplateAdmin, chrono::Utc::now())
        .await
        .expect("admin")
        .id;
    create_user(db.pool(), "olga", UserRole::Owner, chrono::Utc::now()).await.expect("owner");
    create_user(db.pool(), "mo", UserRole::Member, chrono::Utc::now()).await.expect("member");
    let (template_id, version_id) = seed::template(&mut conn, "go").await;
    let preset_id = seed::preset(&mut conn, version_id, "small", 1).await;
    for minute in 0..3 {
        let at = t("2025-06-02T08:50:00Z") + TimeDelta::minutes(minute);
        let failed = WorkspaceSeed {
            status: JobStatus::Failed,
            ..WorkspaceSeed::prebuild(template_id, version_id, preset_id, at)
        };
        seed::workspace(&mut conn, failed).await;
    }
    let now = t("2025-06-02T09:00:00Z");
    for minute in 0..3 {
        reconcile(&db, now + TimeDelta::minutes(minute)).await;
    }
    let found = notes(&db, "preset_hard_limited").await;
    assert_eq!(found.len(), 1, "one admin, one preset: {found:?}");
    assert_eq!(found[0].notification.user_id, admin);
    assert_eq!(found[0].notification.payload["preset_id"], serde_json::json!(preset_id));

    // Lifted by a success, then limited again: a new episode, so the admins hear again.
    let ok = WorkspaceSeed::prebuild(template_id, version_id, preset_id, now);
    let ok_ws = seed::workspace(&mut conn, ok).await;
    reconcile(&db, now + TimeDelta::minutes(5)).await;
    let status = "SELECT count(*) AS n FROM presets WHERE prebuild_status = 'healthy'";
    assert_eq!(seed::count(&mut conn, status).await, 1);
    conn.batch_execute(&format!("DELETE FROM workspaces WHERE id = '{ok_ws}'")).await.expect("rm");
    reconcile(&db, now + TimeDelta::minutes(6)).await;
    let limited = "SELECT count(*) AS n FROM presets WHERE prebuild_status = 'hard_limited'";
    assert_eq!(seed::count(&mut conn, limited).await, 1);
    assert_eq!(notes(&db, "preset_hard_limited").await.len(), 2, "the second episode");
    // Later cycles of the same episode stay quiet.
    reconcile(&db, now + TimeDelta::minutes(7)).await;
    assert_eq!(notes(&db, "preset_hard_limited").await.len(), 2);
    let audits = format!(
        "SELECT count(*) AS n FROM audit_log WHERE action = 'preset_status' AND resource_id = '{preset_id}'"
    );
    assert_eq!(seed::count(&mut conn, &audits).await, 3, "limited, lifted, limited");
}

/// A simulated source whose `vm` depends on the owner (re-created on a claim) and whose
/// `home` does not. (Templates files do not accept these keys yet: the source is seeded.)
fn replacing_source() -> serde_json::Value {
    serde_json::json!({
        "duration_ms": 0,
        "agent_start_secs": 0,
        "resources": ["vm", "home"],
        "replace_on_claim": ["vm"],
    })
}

/// Takes the next pending job and runs it on the simulated backend; returns it with its
/// result, not yet completed.
async fn run_next_job(conn: &mut AsyncPgConnection) -> (Uuid, JobResult) {
    let job = acquire_next_job(conn, "w1", Utc::now()).await.expect("acquire").expect("a job");
    let job_id = job.id;
    let ctx = load_context(conn, job).await.expect("context");
    let output = Backends::default().run(&ctx, &CancellationToken::new()).await.expect("build");
    (job_id, JobResult::Succeeded(output))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_replaces_resources_notifies_template_admins_once() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (_, version_id) = seed::template(&mut conn, "vm").await;
    let preset_id = seed::preset(&mut conn, version_id, "small", 1).await;
    diesel::update(template_versions::table.find(version_id))
        .set(template_versions::source.eq(replacing_source()))
        .execute(&mut conn)
        .await
        .expect("source");
    let admin = create_user(db.pool(), "tina", UserRole::TemplateAdmin, chrono::Utc::now())
        .await
        .expect("admin")
        .id;
    let member = create_user(db.pool(), "mo", UserRole::Member, chrono::Utc::now())
        .await
        .expect("member")
        .id;
    reconcile(&db, Utc::now()).await;
    let (job, result) = run_next_job(&mut conn).await;
    complete_job(&mut conn, job, "w1", &result, Utc::now()).await.expect("complete").expect("mine");
    assert!(
        notes(&db, "prebuild_resources_replaced").await.is_empty(),
        "a prebuild build is no claim"
    );

    let found = find_template(db.pool(), "default", "vm", Some("small")).await.expect("find");
    let found = found.expect("template");
    let request = ClaimRequest {
        user_id: member,
        template_id: found.template_id,
        preset_id: found.preset_id,
        name: "mine".to_owned(),
        autostart_schedule: None,
        ttl_secs: None,
        parameters: Default::default(),
    };
    let outcome = claim_or_create(db.pool(), Utc::now(), &request).await.expect("claim");
    assert!(outcome.claimed);
    let (job, result) = run_next_job(&mut conn).await;

    // The completion's audit entry fails: the job stays running and no one is notified.
    fail_audit_of(&mut conn, "prebuild_resources_replaced").await;
    assert!(complete_job(&mut conn, job, "w1", &result, Utc::now()).await.is_err());
    assert!(notes(&db, "prebuild_resources_replaced").await.is_empty());
    let running = format!(
        "SELECT count(*) AS n FROM provisioner_jobs WHERE id = '{job}' AND status = 'running'"
    );
    assert_eq!(seed::count(&mut conn, &running).await, 1);
    stop_failing(&mut conn).await;

    let done = complete_job(&mut conn, job, "w1", &result, Utc::now()).await.expect("complete");
    let done = done.expect("still this worker's job");
    assert_eq!(done.replaced_resources, vec!["simulated_resource.vm".to_owned()]);
    // A repeated completion is a no-op.
    assert!(complete_job(&mut conn, job, "w1", &result, Utc::now())
        .await
        .expect("again")
        .is_none());
    let found_notes = notes(&db, "prebuild_resources_replaced").await;
    assert_eq!(found_notes.len(), 1, "{found_notes:?}");
    let note = &found_notes[0].notification;
    assert_eq!(note.user_id, admin);
    assert_eq!(note.payload["preset_id"], serde_json::json!(preset_id));
    assert_eq!(note.payload["workspace_id"], serde_json::json!(outcome.workspace.id));
    assert_eq!(note.payload["resources"], serde_json::json!(["simulated_resource.vm"]));
    let audits = "SELECT count(*) AS n FROM audit_log WHERE action = 'prebuild_resources_replaced'";
    assert_eq!(seed::count(&mut conn, audits).await, 1);
    // Both completions are audited; the rolled-back attempt left nothing.
    let completed = "SELECT count(*) AS n FROM audit_log WHERE action = 'build_completed'
        AND actor = 'provisioner' AND diff->'new'->>'status' = 'succeeded'";
    assert_eq!(seed::count(&mut conn, completed).await, 2);
}

/// A module whose `vm` is re-created when the owner changes (as a claim does) and whose
/// `home` is not; `terraform_data` is built in, so no provider is downloaded.
const OWNER_BOUND_MODULE: &str = r#"
variable "workspace_id" { type = string }
variable "workspace_name" { type = string }
variable "owner" { type = string }
variable "transition" { type = string }

resource "terraform_data" "home" {
  input = var.workspace_id
}

resource "terraform_data" "vm" {
  triggers_replace = var.owner
}
"#;

/// Takes the next job, builds it on `backends` and completes it.
async fn run_with(conn: &mut AsyncPgConnection, backends: &Backends) -> Completion {
    let job = acquire_next_job(conn, "w1", Utc::now()).await.expect("acquire").expect("job");
    let job_id = job.id;
    let ctx = load_context(conn, job).await.expect("context");
    let output = backends.run(&ctx, &CancellationToken::new()).await.expect("terraform");
    let result = JobResult::Succeeded(output);
    let done = complete_job(conn, job_id, "w1", &result, Utc::now()).await.expect("complete");
    done.expect("this worker's job")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(terraform_available), ignore = "terraform is not on PATH")]
async fn terraform_replacements_on_claim_are_detected_from_the_state() {
    if poolkeeper_tests::skip_without_terraform() {
        return;
    }
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let root = std::env::temp_dir().join(format!("poolkeeper-replace-{}", Uuid::new_v4()));
    let module = root.join("module");
    std::fs::create_dir_all(&module).expect("module dir");
    std::fs::write(module.join("main.tf"), OWNER_BOUND_MODULE).expect("module");
    let backends = Backends {
        terraform: TerraformConfig { bin: "terraform".to_owned(), work_dir: root.join("work") },
        ..Backends::default()
    };
    let (_, version_id) = seed::template(&mut conn, "tf").await;
    let preset_id = seed::preset(&mut conn, version_id, "small", 1).await;
    diesel::update(template_versions::table.find(version_id))
        .set((
            template_versions::provisioner.eq(ProvisionerKind::Terraform),
            template_versions::source.eq(serde_json::json!({"dir": module})),
        ))
        .execute(&mut conn)
        .await
        .expect("terraform version");
    let admin = create_user(db.pool(), "tina", UserRole::TemplateAdmin, chrono::Utc::now())
        .await
        .expect("admin")
        .id;
    let member = create_user(db.pool(), "mo", UserRole::Member, chrono::Utc::now())
        .await
        .expect("member")
        .id;

    reconcile(&db, Utc::now()).await;
    let prebuilt = run_with(&mut conn, &backends).await;
    assert!(prebuilt.replaced_resources.is_empty());
    let found = find_template(db.pool(), "default", "tf", Some("small")).await.expect("find");
    let request = ClaimRequest {
        user_id: member,
        template_id: found.expect("template").template_id,
        preset_id: Some(preset_id),
        name: "mine".to_owned(),
        autostart_schedule: None,
        ttl_secs: None,
        parameters: Default::default(),
    };
    assert!(claim_or_create(db.pool(), Utc::now(), &request).await.expect("claim").claimed);
    let claimed = run_with(&mut conn, &backends).await;
    assert_eq!(claimed.replaced_resources, vec!["terraform_data.vm".to_owned()]);
    let found_notes = notes(&db, "prebuild_resources_replaced").await;
    assert_eq!(found_notes.len(), 1, "{found_notes:?}");
    assert_eq!(found_notes[0].notification.user_id, admin);
    assert_eq!(found_notes[0].notification.payload["preset_id"], serde_json::json!(preset_id));
    let _ = std::fs::remove_dir_all(&root);
}

/// Build #2 of a fresh workspace of alice's: `transition` for `reason`, its job taken by
/// worker `w1`. Returns the workspace, the job and the owner.
async fn automatic_build(
    db: &TestDatabase,
    transition: Transition,
    reason: &str,
) -> (Uuid, Uuid, Uuid) {
    let mut conn = db.conn().await;
    let (template_id, version_id) = seed::template(&mut conn, "go").await;
    let alice = seed::user(&mut conn, "alice").await;
    let now = Utc::now();
    let first = WorkspaceSeed::owned(alice, template_id, version_id, Transition::Start, now);
    let workspace = seed::workspace(&mut conn, first).await;
    let second = WorkspaceSeed {
        transition,
        status: JobStatus::Pending,
        ..WorkspaceSeed::owned(alice, template_id, version_id, transition, now)
    };
    seed::build(&mut conn, workspace, 2, &second).await;
    diesel::sql_query(
        "UPDATE workspace_builds SET reason = $1 WHERE workspace_id = $2 AND build_number = 2",
    )
    .bind::<diesel::sql_types::Text, _>(reason)
    .bind::<diesel::sql_types::Uuid, _>(workspace)
    .execute(&mut conn)
    .await
    .expect("reason");
    let job = acquire_next_job(&mut conn, "w1", now).await.expect("acquire").expect("a job");
    (workspace, job.id, alice)
}

/// Runs taken job `job_id` on the simulated backend (it succeeds).
async fn simulate(conn: &mut AsyncPgConnection, job_id: Uuid) -> JobResult {
    use poolkeeper::db::models::ProvisionerJob;
    use poolkeeper::db::schema::provisioner_jobs;
    let job: ProvisionerJob = provisioner_jobs::table
        .find(job_id)
        .select(ProvisionerJob::as_select())
        .first(conn)
        .await
        .expect("job");
    let ctx = load_context(conn, job).await.expect("context");
    let output = Backends::default().run(&ctx, &CancellationToken::new()).await.expect("build");
    JobResult::Succeeded(output)
}

fn failed(message: &str) -> JobResult {
    JobResult::Failed(poolkeeper::provisioner::backend::BuildFailure {
        error: poolkeeper::provisioner::BackendError::InvalidSource(message.to_owned()),
        state: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_autostart_or_autostop_notifies_the_owner_once() {
    for (transition, reason) in [(Transition::Start, "autostart"), (Transition::Stop, "autostop")] {
        let db = TestDatabase::new().await;
        let (workspace, job, alice) = automatic_build(&db, transition, reason).await;
        let mut conn = db.conn().await;
        complete_job(&mut conn, job, "w1", &failed("disk full"), Utc::now())
            .await
            .expect("complete")
            .expect("mine");
        let listed = notes(&db, "workspace_autobuild_failed").await;
        assert_eq!(listed.len(), 1, "{reason}");
        let note = &listed[0].notification;
        assert_eq!(note.user_id, alice);
        assert_eq!(note.payload["workspace_id"], workspace.to_string());
        assert_eq!(note.payload["reason"], reason);
        assert_eq!(note.payload["transition"], transition.as_str());
        assert!(note.payload["error"].as_str().is_some_and(|e| e.contains("disk full")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_a_person_asked_for_and_successful_autostops_notify_no_one() {
    let db = TestDatabase::new().await;
    let (_, job, _) = automatic_build(&db, Transition::Start, "initiator").await;
    let mut conn = db.conn().await;
    complete_job(&mut conn, job, "w1", &failed("boom"), Utc::now()).await.expect("complete");
    let db2 = TestDatabase::new().await;
    let (_, job2, _) = automatic_build(&db2, Transition::Stop, "autostop").await;
    let mut conn2 = db2.conn().await;
    let result = simulate(&mut conn2, job2).await;
    complete_job(&mut conn2, job2, "w1", &result, Utc::now()).await.expect("complete");
    assert!(notes(&db, "workspace_autobuild_failed").await.is_empty(), "a person's build");
    assert!(notes(&db2, "workspace_autobuild_failed").await.is_empty(), "a success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_delete_that_went_through_notifies_the_owner() {
    let db = TestDatabase::new().await;
    let (workspace, job, alice) = automatic_build(&db, Transition::Delete, "autodelete").await;
    let mut conn = db.conn().await;
    let result = simulate(&mut conn, job).await;
    complete_job(&mut conn, job, "w1", &result, Utc::now()).await.expect("complete").expect("mine");
    let listed = notes(&db, "workspace_autodeleted").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].notification.user_id, alice);
    assert_eq!(listed[0].notification.payload["workspace_id"], workspace.to_string());
}
