//! The lifecycle store against a real PostgreSQL: candidates, re-decided application,
//! dormancy side effects.

use poolkeeper_tests::seed;

use diesel_async::RunQueryDsl;
use poolkeeper::db::enums::Transition;
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::store::lifecycle::{apply_lifecycle_decision, load_lifecycle_snapshot, Applied};
use poolkeeper_core::lifecycle::{plan, Reason};
use seed::{t, WorkspaceSeed};

async fn person_workspace(db: &TestDatabase) -> (uuid::Uuid, uuid::Uuid) {
    let mut conn = db.conn().await;
    let (template_id, version_id) = seed::template(&mut conn, "go").await;
    let alice = seed::user(&mut conn, "alice").await;
    let ws = seed::workspace(
        &mut conn,
        WorkspaceSeed::owned(
            alice,
            template_id,
            version_id,
            Transition::Start,
            t("2025-06-02T08:00:00Z"),
        ),
    )
    .await;
    // A prebuild of the same template: never a lifecycle candidate.
    let preset = seed::preset(&mut conn, version_id, "small", 1).await;
    seed::workspace(
        &mut conn,
        WorkspaceSeed::prebuild(template_id, version_id, preset, t("2025-06-02T08:00:00Z")),
    )
    .await;
    (ws, alice)
}

#[tokio::test]
async fn autostop_is_applied_once() {
    let db = TestDatabase::new().await;
    let now = t("2025-06-02T09:00:00Z");
    let (_, decision) = due_autostop(&db, now).await;

    let applied =
        apply_lifecycle_decision(db.pool(), &seed::lead(&db, "lifecycle").await, now, &decision)
            .await
            .expect("apply");
    assert!(matches!(applied, Applied::Done { job_id: Some(_), .. }));
    // The stale decision again: the stop build is in flight, so the fresh decision is empty.
    let again =
        apply_lifecycle_decision(db.pool(), &seed::lead(&db, "lifecycle").await, now, &decision)
            .await
            .expect("apply");
    assert_eq!(again, Applied::Skipped("no_longer_due"));
    let mut conn = db.conn().await;
    let stops = "SELECT count(*) AS n FROM workspace_builds WHERE transition = 'stop' AND reason = 'autostop'";
    assert_eq!(seed::count(&mut conn, stops).await, 1);
}

#[tokio::test]
async fn dormancy_marks_clears_next_start_and_notifies_once_a_day() {
    let db = TestDatabase::new().await;
    let (ws, alice) = person_workspace(&db).await;
    let mut conn = db.conn().await;
    diesel::sql_query("UPDATE templates SET time_til_dormant_secs = 3600, time_til_dormant_autodelete_secs = 86400")
        .execute(&mut conn)
        .await
        .expect("template");
    diesel::sql_query("UPDATE workspaces SET next_start_at = '2025-06-03T09:00:00Z' WHERE id = $1")
        .bind::<diesel::sql_types::Uuid, _>(ws)
        .execute(&mut conn)
        .await
        .expect("next start");
    let now = t("2025-06-02T12:00:00Z");
    let snapshot = load_lifecycle_snapshot(&mut conn, now).await.expect("load");
    let decisions = plan(now, &snapshot);
    assert!(decisions[0].mark_dormant.is_some());
    let applied = apply_lifecycle_decision(
        db.pool(),
        &seed::lead(&db, "lifecycle").await,
        now,
        &decisions[0],
    )
    .await
    .expect("apply");
    assert!(matches!(applied, Applied::Done { .. }));
    let dormant = format!(
        "SELECT count(*) AS n FROM workspaces WHERE id = '{ws}' AND dormant_at IS NOT NULL
           AND deleting_at = '2025-06-03T12:00:00Z' AND next_start_at IS NULL"
    );
    assert_eq!(seed::count(&mut conn, &dormant).await, 1);
    let notes = format!("SELECT count(*) AS n FROM notifications WHERE user_id = '{alice}' AND kind = 'workspace_dormant'");
    assert_eq!(seed::count(&mut conn, &notes).await, 1);
    let audits = format!("SELECT count(*) AS n FROM audit_log WHERE resource_id = '{ws}'");
    assert_eq!(seed::count(&mut conn, &audits).await, 1);
}

/// The key the applier's per-workspace advisory lock uses.
fn advisory_key(workspace_id: uuid::Uuid) -> i64 {
    let (high, low) = workspace_id.as_u64_pair();
    i64::from_ne_bytes((high ^ low).to_ne_bytes())
}

/// A workspace whose autostop is due at `now`, with its decision.
async fn due_autostop(
    db: &TestDatabase,
    now: chrono::DateTime<chrono::Utc>,
) -> (uuid::Uuid, poolkeeper_core::lifecycle::Decision) {
    let (ws, _) = person_workspace(db).await;
    let mut conn = db.conn().await;
    diesel::sql_query(
        "UPDATE workspace_builds SET deadline = '2025-06-02T08:30:00Z' WHERE workspace_id = $1",
    )
    .bind::<diesel::sql_types::Uuid, _>(ws)
    .execute(&mut conn)
    .await
    .expect("deadline");
    let snapshot = load_lifecycle_snapshot(&mut conn, now).await.expect("load");
    assert_eq!(snapshot.workspaces.len(), 1, "the workspace is the one candidate");
    let decision = plan(now, &snapshot).remove(0);
    assert_eq!(decision.reason, Some(Reason::Autostop));
    (ws, decision)
}

#[tokio::test]
async fn a_workspace_another_replica_is_on_is_skipped_without_waiting() {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};

    let db = TestDatabase::new().await;
    let now = t("2025-06-02T09:00:00Z");
    let (ws, decision) = due_autostop(&db, now).await;
    // Another replica applying the same workspace: its advisory lock and its row lock.
    let mut other =
        diesel_async::AsyncPgConnection::establish(db.url()).await.expect("other connection");
    other
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({}); SELECT 1 FROM workspaces WHERE id = '{ws}' FOR UPDATE",
            advisory_key(ws)
        ))
        .await
        .expect("hold the workspace");
    // The lock is held until after the apply returns: a waiting apply could only end in a
    // lock timeout error, so `Skipped("locked")` shows it never waited; the cap is generous.
    let applied = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        apply_lifecycle_decision(db.pool(), &seed::lead(&db, "lifecycle").await, now, &decision),
    )
    .await
    .expect("the row lock is never waited for")
    .expect("apply");
    assert_eq!(applied, Applied::Skipped("locked"));
    other.batch_execute("ROLLBACK").await.expect("release");

    let applied =
        apply_lifecycle_decision(db.pool(), &seed::lead(&db, "lifecycle").await, now, &decision)
            .await
            .expect("apply");
    assert!(matches!(applied, Applied::Done { job_id: Some(_), .. }), "{applied:?}");
}

#[tokio::test]
async fn a_workspace_deleted_since_the_snapshot_is_skipped() {
    let db = TestDatabase::new().await;
    let now = t("2025-06-02T09:00:00Z");
    let (ws, decision) = due_autostop(&db, now).await;
    let mut conn = db.conn().await;
    diesel::sql_query("UPDATE workspaces SET deleted = true WHERE id = $1")
        .bind::<diesel::sql_types::Uuid, _>(ws)
        .execute(&mut conn)
        .await
        .expect("delete");
    let applied =
        apply_lifecycle_decision(db.pool(), &seed::lead(&db, "lifecycle").await, now, &decision)
            .await
            .expect("apply");
    assert_eq!(applied, Applied::Skipped("gone"));
    let audits = format!("SELECT count(*) AS n FROM audit_log WHERE resource_id = '{ws}'");
    assert_eq!(seed::count(&mut conn, &audits).await, 0);
}

/// Lock, then read: an activity bump committed while the applier waits for the workspace's
/// row lock must be seen, so the workspace is not stopped on its old deadline.
#[tokio::test]
async fn a_bump_committed_during_the_lock_wait_is_seen() {
    use diesel_async::SimpleAsyncConnection;

    let db = TestDatabase::new().await;
    let now = t("2025-06-02T09:00:00Z");
    let (ws, decision) = due_autostop(&db, now).await;
    // A person's request holds the workspace row and bumps the deadline past `now`.
    let mut other = open_transaction(&db).await;
    other
        .batch_execute(&format!(
            "SELECT 1 FROM workspaces WHERE id = '{ws}' FOR UPDATE;
             UPDATE workspace_builds SET deadline = '2025-06-02T10:00:00Z'
             WHERE workspace_id = '{ws}'"
        ))
        .await
        .expect("hold and bump");
    let applied = apply_after_lock_wait(&db, other, now, decision).await;
    assert_eq!(applied, Applied::Skipped("no_longer_due"));
    let mut conn = db.conn().await;
    let stops = "SELECT count(*) AS n FROM workspace_builds WHERE transition = 'stop'";
    assert_eq!(seed::count(&mut conn, stops).await, 0, "stopped on the old deadline");
}

/// A build inserted while the applier waits (its foreign key locks the workspace row) is
/// seen after the wait: the stale decision is skipped, not counted as a failure.
#[tokio::test]
async fn a_build_inserted_during_the_lock_wait_makes_the_decision_a_skip() {
    let db = TestDatabase::new().await;
    let now = t("2025-06-02T09:00:00Z");
    let (ws, decision) = due_autostop(&db, now).await;
    let mut other = open_transaction(&db).await;
    let mut conn = db.conn().await;
    let (template_id, version_id): (uuid::Uuid, uuid::Uuid) = {
        let row = "SELECT w.template_id, b.template_version_id FROM workspaces w
                   JOIN workspace_builds b ON b.workspace_id = w.id WHERE w.id = $1";
        #[derive(diesel::QueryableByName)]
        struct Ids {
            #[diesel(sql_type = diesel::sql_types::Uuid)]
            template_id: uuid::Uuid,
            #[diesel(sql_type = diesel::sql_types::Uuid)]
            template_version_id: uuid::Uuid,
        }
        let ids: Ids = diesel::sql_query(row)
            .bind::<diesel::sql_types::Uuid, _>(ws)
            .get_result(&mut conn)
            .await
            .expect("ids");
        (ids.template_id, ids.template_version_id)
    };
    let alice = seed::user(&mut conn, "bob").await;
    let mut stop = WorkspaceSeed::owned(alice, template_id, version_id, Transition::Stop, now);
    stop.status = poolkeeper::db::enums::JobStatus::Pending;
    seed::build(&mut other, ws, 2, &stop).await;
    let applied = apply_after_lock_wait(&db, other, now, decision).await;
    assert_eq!(applied, Applied::Skipped("no_longer_due"));
    let builds = format!("SELECT count(*) AS n FROM workspace_builds WHERE workspace_id = '{ws}'");
    assert_eq!(seed::count(&mut conn, &builds).await, 2, "no third build");
}

/// A second connection with a transaction open.
async fn open_transaction(db: &TestDatabase) -> diesel_async::AsyncPgConnection {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let mut other =
        diesel_async::AsyncPgConnection::establish(db.url()).await.expect("other connection");
    other.batch_execute("BEGIN").await.expect("begin");
    other
}

/// Applies `decision` while `other` holds the workspace's row lock; proves the applier
/// waited for it, then commits `other` and returns what the applier did.
async fn apply_after_lock_wait(
    db: &TestDatabase,
    mut other: diesel_async::AsyncPgConnection,
    now: chrono::DateTime<chrono::Utc>,
    decision: poolkeeper_core::lifecycle::Decision,
) -> Applied {
    use diesel_async::SimpleAsyncConnection;
    let fence = seed::lead(db, "lifecycle").await;
    let pool = db.pool().clone();
    let apply =
        tokio::spawn(async move { apply_lifecycle_decision(&pool, &fence, now, &decision).await });
    // Proof that the applier is waiting on the row lock before the bump commits.
    let mut conn = db.conn().await;
    let waiting = "SELECT count(*) AS n FROM pg_stat_activity
        WHERE datname = current_database() AND wait_event_type = 'Lock'";
    let mut waited = false;
    for _ in 0..200 {
        if seed::count(&mut conn, waiting).await > 0 {
            waited = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(waited, "the applier never waited for the row lock");
    other.batch_execute("COMMIT").await.expect("commit");
    apply.await.expect("apply task").expect("apply")
}

/// A person's workspace (build #1 `transition`, job `status`, at 08:00) on version v1 of a
/// template whose active version is then v2, with automatic updates on: only a start may
/// move it to v2. Returns (workspace, v1, v2).
async fn workspace_behind_the_active_version(
    db: &TestDatabase,
    transition: Transition,
    status: poolkeeper::db::enums::JobStatus,
) -> (uuid::Uuid, uuid::Uuid, uuid::Uuid) {
    let mut conn = db.conn().await;
    let (template_id, v1) = seed::template(&mut conn, "go").await;
    let alice = seed::user(&mut conn, "alice").await;
    let ws = seed::workspace(
        &mut conn,
        WorkspaceSeed {
            status,
            ..WorkspaceSeed::owned(alice, template_id, v1, transition, t("2025-06-02T08:00:00Z"))
        },
    )
    .await;
    let v2 = seed::version(&mut conn, template_id, "v2").await;
    diesel::sql_query("UPDATE workspaces SET automatic_updates = 'always' WHERE id = $1")
        .bind::<diesel::sql_types::Uuid, _>(ws)
        .execute(&mut conn)
        .await
        .expect("automatic updates");
    (ws, v1, v2)
}

/// The decision the planner makes for `ws` at `now`, from a snapshot of the database.
async fn decision_for(
    db: &TestDatabase,
    ws: uuid::Uuid,
    now: chrono::DateTime<chrono::Utc>,
) -> poolkeeper_core::lifecycle::Decision {
    let mut conn = db.conn().await;
    let snapshot = load_lifecycle_snapshot(&mut conn, now).await.expect("load");
    plan(now, &snapshot).into_iter().find(|d| d.workspace_id == ws).expect("a decision")
}

/// (transition, reason, version) of build `number` of `ws`, and whether its job is pending.
async fn build_row(db: &TestDatabase, ws: uuid::Uuid, number: i32) -> (String, String, uuid::Uuid) {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        transition: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        reason: String,
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        template_version_id: uuid::Uuid,
    }
    let mut conn = db.conn().await;
    let row: Row = diesel::sql_query(
        "SELECT b.transition, b.reason, b.template_version_id FROM workspace_builds b
         JOIN provisioner_jobs j ON j.id = b.job_id
         WHERE b.workspace_id = $1 AND b.build_number = $2 AND j.status = 'pending'",
    )
    .bind::<diesel::sql_types::Uuid, _>(ws)
    .bind::<diesel::sql_types::Integer, _>(number)
    .get_result(&mut conn)
    .await
    .expect("the new build, its job pending");
    (row.transition, row.reason, row.template_version_id)
}

#[tokio::test]
async fn failedstop_is_applied_once_on_the_latest_builds_version() {
    use poolkeeper::db::enums::JobStatus;
    let db = TestDatabase::new().await;
    let (ws, v1, v2) =
        workspace_behind_the_active_version(&db, Transition::Start, JobStatus::Failed).await;
    let mut conn = db.conn().await;
    diesel::sql_query("UPDATE templates SET failure_ttl_secs = 3600")
        .execute(&mut conn)
        .await
        .expect("failure ttl");
    let now = t("2025-06-02T12:00:00Z");
    let decision = decision_for(&db, ws, now).await;
    assert_eq!(decision.reason, Some(Reason::Failedstop), "{decision:?}");
    let lead = seed::lead(&db, "lifecycle").await;
    let applied = apply_lifecycle_decision(db.pool(), &lead, now, &decision).await.expect("apply");
    assert!(matches!(applied, Applied::Done { job_id: Some(_), .. }), "{applied:?}");
    let (transition, reason, version) = build_row(&db, ws, 2).await;
    assert_eq!((transition.as_str(), reason.as_str()), ("stop", "failedstop"));
    assert_eq!(version, v1, "a stop keeps the latest build's version, not the active {v2}");
    let again = apply_lifecycle_decision(db.pool(), &lead, now, &decision).await.expect("apply");
    assert_eq!(again, Applied::Skipped("no_longer_due"));
    let audits = format!(
        "SELECT count(*) AS n FROM audit_log WHERE resource_id = '{ws}'
           AND diff->>'reason' = 'failedstop'"
    );
    assert_eq!(seed::count(&mut conn, &audits).await, 1);
}

#[tokio::test]
async fn autodelete_is_applied_once_on_the_latest_builds_version() {
    use poolkeeper::db::enums::JobStatus;
    let db = TestDatabase::new().await;
    let (ws, v1, v2) =
        workspace_behind_the_active_version(&db, Transition::Stop, JobStatus::Succeeded).await;
    let mut conn = db.conn().await;
    diesel::sql_query(
        "UPDATE templates SET time_til_dormant_secs = 3600, time_til_dormant_autodelete_secs = 86400",
    )
    .execute(&mut conn)
    .await
    .expect("template");
    diesel::sql_query(
        "UPDATE workspaces SET dormant_at = '2025-06-01T09:00:00Z',
           deleting_at = '2025-06-02T09:00:00Z' WHERE id = $1",
    )
    .bind::<diesel::sql_types::Uuid, _>(ws)
    .execute(&mut conn)
    .await
    .expect("dormant");
    let now = t("2025-06-02T12:00:00Z");
    let decision = decision_for(&db, ws, now).await;
    assert_eq!(decision.reason, Some(Reason::Autodelete), "{decision:?}");
    let lead = seed::lead(&db, "lifecycle").await;
    let applied = apply_lifecycle_decision(db.pool(), &lead, now, &decision).await.expect("apply");
    assert!(matches!(applied, Applied::Done { job_id: Some(_), .. }), "{applied:?}");
    let (transition, reason, version) = build_row(&db, ws, 2).await;
    assert_eq!((transition.as_str(), reason.as_str()), ("delete", "autodelete"));
    assert_eq!(version, v1, "a delete keeps the latest build's version, not the active {v2}");
    let again = apply_lifecycle_decision(db.pool(), &lead, now, &decision).await.expect("apply");
    assert_eq!(again, Applied::Skipped("no_longer_due"));
    let audits = format!(
        "SELECT count(*) AS n FROM audit_log WHERE resource_id = '{ws}'
           AND diff->>'reason' = 'autodelete'"
    );
    assert_eq!(seed::count(&mut conn, &audits).await, 1);
}

#[tokio::test]
async fn an_autostop_keeps_the_latest_builds_version_and_an_autostart_moves_to_the_active_one() {
    use poolkeeper::db::enums::JobStatus;
    let db = TestDatabase::new().await;
    let (ws, v1, v2) =
        workspace_behind_the_active_version(&db, Transition::Start, JobStatus::Succeeded).await;
    let mut conn = db.conn().await;
    diesel::sql_query("UPDATE workspace_builds SET deadline = '2025-06-02T08:30:00Z'")
        .execute(&mut conn)
        .await
        .expect("deadline");
    let now = t("2025-06-02T09:00:00Z");
    let decision = decision_for(&db, ws, now).await;
    assert_eq!(decision.reason, Some(Reason::Autostop), "{decision:?}");
    let lead = seed::lead(&db, "lifecycle").await;
    apply_lifecycle_decision(db.pool(), &lead, now, &decision).await.expect("apply");
    let (transition, _, version) = build_row(&db, ws, 2).await;
    assert_eq!((transition.as_str(), version), ("stop", v1), "not the active {v2}");

    // The stop succeeds; an autostart then moves to the active version.
    seed::complete_pending_jobs(&mut conn, t("2025-06-02T09:01:00Z")).await;
    diesel::sql_query(
        "UPDATE workspaces SET autostart_schedule = 'CRON_TZ=UTC 0 10 * * *',
           next_start_at = '2025-06-02T10:00:00Z' WHERE id = $1",
    )
    .bind::<diesel::sql_types::Uuid, _>(ws)
    .execute(&mut conn)
    .await
    .expect("schedule");
    let now = t("2025-06-02T10:00:30Z");
    let decision = decision_for(&db, ws, now).await;
    assert_eq!(decision.reason, Some(Reason::Autostart), "{decision:?}");
    apply_lifecycle_decision(db.pool(), &lead, now, &decision).await.expect("apply");
    let (transition, _, version) = build_row(&db, ws, 3).await;
    assert_eq!((transition.as_str(), version), ("start", v2));
}

#[tokio::test]
async fn the_audit_entry_of_a_decision_says_which_rule_and_why() {
    let db = TestDatabase::new().await;
    let now = t("2025-06-02T09:00:00Z");
    let (ws, decision) = due_autostop(&db, now).await;
    apply_lifecycle_decision(db.pool(), &seed::lead(&db, "lifecycle").await, now, &decision)
        .await
        .expect("apply");
    let entries =
        poolkeeper::store::workspace_story::recent_lifecycle_decisions(db.pool(), Some(ws), 10)
            .await
            .expect("decisions");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].diff["rule"], "autostop");
    assert_eq!(entries[0].diff["why"], "autostop: deadline 2025-06-02T08:30:00Z reached");
    assert_eq!(entries[0].diff["transition"], "stop");
}

/// The snapshot is read every tick for every workspace; a workspace's provisioner state (a
/// Terraform state, often megabytes) is read only by the applier, for the build it writes.
#[tokio::test]
async fn the_snapshot_leaves_the_provisioner_state_behind_and_the_stop_carries_it() {
    use poolkeeper_tests::fault_proxy::FaultProxy;
    use std::sync::atomic::{AtomicU64, Ordering};

    const STATE_BYTES: i64 = 1 << 20;
    let db = TestDatabase::new().await;
    let now = t("2025-06-02T09:00:00Z");
    let (ws, _) = due_autostop(&db, now).await;
    let mut conn = db.conn().await;
    diesel::sql_query(format!(
        "UPDATE workspace_builds SET provisioner_state = convert_to(repeat('x', {STATE_BYTES}), 'UTF8')
         WHERE workspace_id = $1"
    ))
    .bind::<diesel::sql_types::Uuid, _>(ws)
    .execute(&mut conn)
    .await
    .expect("state");

    let proxy = FaultProxy::for_url(db.url()).await;
    let mut through_proxy = poolkeeper::db::pool::establish(
        &proxy.url(db.url()),
        &poolkeeper::db::pool::SessionSettings::for_role("lifecycle"),
    )
    .await
    .expect("connect through the proxy");
    let before = AtomicU64::load(&proxy.counts().server_bytes, Ordering::Relaxed);
    let snapshot = load_lifecycle_snapshot(&mut through_proxy, now).await.expect("load");
    let read = AtomicU64::load(&proxy.counts().server_bytes, Ordering::Relaxed) - before;
    assert_eq!(snapshot.workspaces.len(), 1);
    assert!(read > 0 && read < 64 * 1024, "the snapshot read {read} bytes");

    let decision = plan(now, &snapshot).remove(0);
    let applied =
        apply_lifecycle_decision(db.pool(), &seed::lead(&db, "lifecycle").await, now, &decision)
            .await
            .expect("apply");
    assert!(matches!(applied, Applied::Done { job_id: Some(_), .. }));
    let carried = format!(
        "SELECT count(*) AS n FROM workspace_builds WHERE workspace_id = '{ws}' AND build_number = 2
           AND length(provisioner_state) = {STATE_BYTES}"
    );
    assert_eq!(seed::count(&mut conn, &carried).await, 1, "the stop build carries the state");
}

/// The snapshot lists workspaces by id whatever order the server returns them in, so a
/// recorded replay file of the same state is the same file.
#[tokio::test]
async fn the_snapshot_lists_workspaces_by_id() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    seed::running_workspaces(&mut conn, 30).await;
    // Rewritten rows move within the table, away from id order.
    diesel::sql_query("UPDATE workspaces SET updated_at = now() WHERE name < 'ws-8'")
        .execute(&mut conn)
        .await
        .expect("update");
    let snapshot =
        load_lifecycle_snapshot(&mut conn, t("2025-06-02T09:00:00Z")).await.expect("load");
    let ids: Vec<_> = snapshot.workspaces.iter().map(|w| w.id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids.len(), 30);
    assert_eq!(ids, sorted);
}
