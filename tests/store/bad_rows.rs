//! Rows the core cannot read — an enum value this version does not know (written by a newer
//! release, or by hand), a cron expression that does not parse — cost only their own preset
//! or workspace a cycle: it is logged and skipped, and every other one is still served.

use poolkeeper_tests::seed;

use diesel::sql_types::{Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use poolkeeper::daemon::{CycleOutcome, LifecycleExecutor, PrebuildReconciler};
use poolkeeper::db::enums::Transition;
use poolkeeper::db::test_db::TestDatabase;
use seed::{t, WorkspaceSeed, CONFIG};
use uuid::Uuid;

/// Drops the CHECK constraint of `table` whose definition mentions `needle`, as a database
/// shared with a newer release (or edited by hand) might lack it.
async fn drop_check(conn: &mut AsyncPgConnection, table: &str, needle: &str) {
    diesel::sql_query(format!(
        "DO $$ DECLARE c text; BEGIN
           SELECT conname INTO STRICT c FROM pg_constraint
            WHERE conrelid = '{table}'::regclass AND contype = 'c'
              AND pg_get_constraintdef(oid) LIKE '%{needle}%'
              AND pg_get_constraintdef(oid) NOT LIKE '%completed_at%';
           EXECUTE format('ALTER TABLE {table} DROP CONSTRAINT %I', c);
         END $$"
    ))
    .execute(conn)
    .await
    .expect("drop the CHECK constraint");
}

/// Create jobs queued for `preset`'s prebuilds.
async fn queued_creates(conn: &mut AsyncPgConnection, preset: Uuid) -> i64 {
    seed::count(
        conn,
        &format!(
            "SELECT count(*) AS n FROM workspace_builds b JOIN provisioner_jobs j ON j.id = b.job_id
              WHERE b.preset_id = '{preset}' AND j.status = 'pending' AND b.transition = 'start'"
        ),
    )
    .await
}

#[tokio::test]
async fn an_unreadable_preset_is_skipped_and_the_others_reconciled() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let now = t("2025-06-02T09:00:00Z");
    let (template, version) = seed::template(&mut conn, "go").await;
    let good = seed::preset(&mut conn, version, "good", 2).await;
    let broken = seed::preset(&mut conn, version, "broken", 2).await;
    let odd = seed::preset(&mut conn, version, "odd-schedule", 1).await;

    // `broken` has a prebuild whose job is in a state this release does not know.
    drop_check(&mut conn, "provisioner_jobs", "canceling").await;
    let seed = WorkspaceSeed::prebuild(template, version, broken, now);
    let ws = seed::workspace(&mut conn, seed).await;
    diesel::sql_query(
        "UPDATE provisioner_jobs SET status = 'hibernating', completed_at = NULL
          WHERE id = (SELECT job_id FROM workspace_builds WHERE workspace_id = $1)",
    )
    .bind::<diesel::sql_types::Uuid, _>(ws)
    .execute(&mut conn)
    .await
    .expect("an unknown job status");
    // `odd-schedule` stores a schedule that does not parse: the core falls back to the
    // preset's default count and says why (rules §4), rather than skipping the preset.
    diesel::sql_query(
        "INSERT INTO preset_schedules (preset_id, position, cron, instances) VALUES ($1, 0, $2, 5)",
    )
    .bind::<diesel::sql_types::Uuid, _>(odd)
    .bind::<Text, _>("every weekday at nine")
    .execute(&mut conn)
    .await
    .expect("an invalid schedule");

    let mut reconciler = PrebuildReconciler::new(db.pool().clone(), db.url(), CONFIG, 2);
    let outcome = reconciler.cycle(now).await.expect("the cycle survives bad rows");
    let CycleOutcome::Ran(stats) = outcome else { panic!("unexpected outcome {outcome:?}") };
    assert_eq!(stats.failures, 0, "{stats:?}");
    assert_eq!(stats.presets, 2, "the unreadable preset is left out of the snapshot: {stats:?}");
    assert_eq!(queued_creates(&mut conn, good).await, 2);
    assert_eq!(queued_creates(&mut conn, odd).await, 1, "the default count, not the schedule's");
    assert_eq!(queued_creates(&mut conn, broken).await, 0, "a skipped preset gets no action");
}

/// A running workspace of `owner` whose build deadline passed an hour before `now`.
async fn overdue_workspace(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    template: Uuid,
    version: Uuid,
    now: chrono::DateTime<chrono::Utc>,
) -> Uuid {
    let created = now - chrono::TimeDelta::hours(9);
    let seed = WorkspaceSeed::owned(owner, template, version, Transition::Start, created);
    let ws = seed::workspace(conn, seed).await;
    diesel::sql_query("UPDATE workspace_builds SET deadline = $1 WHERE workspace_id = $2")
        .bind::<Timestamptz, _>(now - chrono::TimeDelta::hours(1))
        .bind::<diesel::sql_types::Uuid, _>(ws)
        .execute(conn)
        .await
        .expect("a passed deadline");
    ws
}

async fn stop_builds(conn: &mut AsyncPgConnection, ws: Uuid) -> i64 {
    seed::count(
        conn,
        &format!(
            "SELECT count(*) AS n FROM workspace_builds
              WHERE workspace_id = '{ws}' AND transition = 'stop'"
        ),
    )
    .await
}

#[tokio::test]
async fn an_unreadable_workspace_is_skipped_and_the_others_transitioned() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let now = t("2025-06-02T09:00:00Z");
    let (template, version) = seed::template(&mut conn, "go").await;
    let alice = seed::user(&mut conn, "alice").await;
    let bob = seed::user(&mut conn, "bob").await;
    let carol = seed::user(&mut conn, "carol").await;
    let due = overdue_workspace(&mut conn, alice, template, version, now).await;

    // Bob's account is in a state this release does not know.
    let unknown_owner = overdue_workspace(&mut conn, bob, template, version, now).await;
    drop_check(&mut conn, "users", "suspended").await;
    diesel::sql_query("UPDATE users SET status = 'on_sabbatical' WHERE id = $1")
        .bind::<diesel::sql_types::Uuid, _>(bob)
        .execute(&mut conn)
        .await
        .expect("an unknown user status");

    // Carol's stored autostart schedule does not parse.
    let bad_cron = overdue_workspace(&mut conn, carol, template, version, now).await;
    diesel::sql_query("UPDATE workspaces SET autostart_schedule = 'at dawn' WHERE id = $1")
        .bind::<diesel::sql_types::Uuid, _>(bad_cron)
        .execute(&mut conn)
        .await
        .expect("an invalid schedule");

    let mut executor = LifecycleExecutor::new(db.pool().clone(), db.url());
    let stats = executor.tick(now).await.expect("the tick survives bad rows").expect("leader");
    assert_eq!(stats.failures, 0, "{stats:?}");
    assert_eq!(stats.workspaces, 2, "the unreadable workspace is left out: {stats:?}");
    assert_eq!(stop_builds(&mut conn, due).await, 1, "the overdue workspace is stopped");
    assert_eq!(stop_builds(&mut conn, unknown_owner).await, 0, "a skipped workspace is untouched");
    // An unparsable autostart schedule only disables autostart: the deadline still applies.
    assert_eq!(stop_builds(&mut conn, bad_cron).await, 1);
}
