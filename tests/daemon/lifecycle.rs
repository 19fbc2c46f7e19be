//! The lifecycle tick applies its decisions in batches: one transaction locks many due
//! workspaces (`SKIP LOCKED`), re-decides them on fresh rows and writes them together; a
//! workspace someone else holds is applied on its own afterwards, once its lock is free.

use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use poolkeeper::daemon::{DaemonError, LifecycleExecutor, TickStats};
use poolkeeper::db::enums::{JobStatus, Transition};
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper_tests::seed::{self, t, WorkspaceSeed};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// `n` running workspaces of one person, all past their deadline at 09:00.
async fn due_autostops(conn: &mut AsyncPgConnection, n: usize) -> Vec<Uuid> {
    let ids = seed::running_workspaces(conn, n).await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(
            "UPDATE workspace_builds SET deadline = '2025-06-02T08:30:00Z' WHERE build_number = 1",
        ),
        conn,
    )
    .await
    .expect("deadline");
    ids
}

/// The lifecycle's stop builds.
const STOPS: &str = "SELECT count(*) AS n FROM workspace_builds WHERE reason = 'autostop'";

/// Transactions that wrote the lifecycle's builds: rows written by one transaction share
/// its id (`xmin`).
const STOP_TRANSACTIONS: &str = "SELECT count(DISTINCT xmin::text) AS n FROM workspace_builds
    WHERE transition = 'stop' AND reason = 'autostop'";

#[tokio::test]
async fn a_tick_writes_its_due_decisions_in_one_transaction_per_batch() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    due_autostops(&mut conn, 40).await;
    let mut executor = LifecycleExecutor::new(db.pool().clone(), db.url());
    let stats = executor.tick(t("2025-06-02T09:00:00Z")).await.expect("tick").expect("leader");
    assert_eq!((stats.workspaces, stats.applied, stats.failures), (40, 40, 0));
    assert_eq!(seed::count(&mut conn, STOPS).await, 40);
    assert_eq!(seed::count(&mut conn, STOP_TRANSACTIONS).await, 1, "one batch");
    // Each workspace still gets its own job and its own audit entry, in the same transaction.
    let jobs = "SELECT count(*) AS n FROM provisioner_jobs j
        JOIN workspace_builds b ON b.job_id = j.id
        WHERE b.reason = 'autostop' AND j.status = 'pending' AND j.xmin = b.xmin";
    assert_eq!(seed::count(&mut conn, jobs).await, 40);
    let audits = "SELECT count(*) AS n FROM audit_log a
        JOIN workspace_builds b ON b.workspace_id = a.resource_id AND b.reason = 'autostop'
        WHERE a.actor = 'lifecycle' AND a.xmin = b.xmin AND a.diff->>'rule' = 'autostop'";
    assert_eq!(seed::count(&mut conn, audits).await, 40);

    let stats = executor.tick(t("2025-06-02T09:01:00Z")).await.expect("tick").expect("leader");
    assert_eq!(stats.applied, 0, "every stop is in flight");
}

/// Three kinds of decision in one batch: an autostop, a dormancy mark (the workspace's next
/// start cleared, its owner notified) and an autostart that moves to the active version
/// (its owner notified, and its missing next start stored); each is written as applying it
/// alone writes it.
#[tokio::test]
async fn a_batch_of_mixed_decisions_writes_each_as_it_would_alone() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let stop = due_autostops(&mut conn, 1).await[0];
    let bob = seed::user(&mut conn, "bob").await;

    let (idle_template, idle_version) = seed::template(&mut conn, "idle").await;
    let idle = seed::workspace(
        &mut conn,
        WorkspaceSeed::owned(
            bob,
            idle_template,
            idle_version,
            Transition::Stop,
            t("2025-06-01T08:00:00Z"),
        ),
    )
    .await;
    let (auto_template, v1) = seed::template(&mut conn, "auto").await;
    let start = seed::workspace(
        &mut conn,
        WorkspaceSeed::owned(bob, auto_template, v1, Transition::Stop, t("2025-06-02T08:00:00Z")),
    )
    .await;
    let v2 = seed::version(&mut conn, auto_template, "v2").await;
    conn.batch_execute(&format!(
        "UPDATE templates SET time_til_dormant_secs = 3600, time_til_dormant_autodelete_secs = 86400
           WHERE id = '{idle_template}';
         UPDATE workspaces SET next_start_at = '2025-06-03T10:00:00Z',
           autostart_schedule = 'CRON_TZ=UTC 0 10 * * *' WHERE id = '{idle}';
         UPDATE workspaces SET automatic_updates = 'always',
           autostart_schedule = 'CRON_TZ=UTC 0 9 * * *', next_start_at = NULL
           WHERE id = '{start}';"
    ))
    .await
    .expect("settings");

    let mut executor = LifecycleExecutor::new(db.pool().clone(), db.url());
    let stats = executor.tick(t("2025-06-02T09:00:30Z")).await.expect("tick").expect("leader");
    assert_eq!((stats.applied, stats.failures), (3, 0), "{stats:?}");

    let one_transaction =
        "SELECT count(DISTINCT xmin::text) AS n FROM audit_log WHERE actor = 'lifecycle'";
    assert_eq!(seed::count(&mut conn, one_transaction).await, 1);
    let stopped = format!(
        "SELECT count(*) AS n FROM workspace_builds WHERE workspace_id = '{stop}'
           AND build_number = 2 AND transition = 'stop' AND reason = 'autostop'"
    );
    assert_eq!(seed::count(&mut conn, &stopped).await, 1);
    // Marked at the tick (the minute), deleted a day later.
    let dormant = format!(
        "SELECT count(*) AS n FROM workspaces WHERE id = '{idle}' AND dormant_at = '2025-06-02T09:00:00Z'
           AND deleting_at = '2025-06-03T09:00:00Z' AND next_start_at IS NULL"
    );
    assert_eq!(seed::count(&mut conn, &dormant).await, 1);
    let no_build =
        format!("SELECT count(*) AS n FROM workspace_builds WHERE workspace_id = '{idle}'");
    assert_eq!(seed::count(&mut conn, &no_build).await, 1, "dormancy queues no build");
    let started = format!(
        "SELECT count(*) AS n FROM workspace_builds WHERE workspace_id = '{start}'
           AND build_number = 2 AND transition = 'start' AND reason = 'autostart'
           AND template_version_id = '{v2}'"
    );
    assert_eq!(seed::count(&mut conn, &started).await, 1);
    let next_start = format!(
        "SELECT count(*) AS n FROM workspaces WHERE id = '{start}' AND next_start_at = '2025-06-03T09:00:00Z'"
    );
    assert_eq!(seed::count(&mut conn, &next_start).await, 1, "the next autostart is stored");
    let notes = format!(
        "SELECT count(*) AS n FROM notifications WHERE user_id = '{bob}'
           AND kind IN ('workspace_dormant', 'workspace_autoupdated')"
    );
    assert_eq!(seed::count(&mut conn, &notes).await, 2);
    let audits = "SELECT count(*) AS n FROM audit_log WHERE actor = 'lifecycle'";
    assert_eq!(seed::count(&mut conn, audits).await, 3);
}

/// Holds `held`'s row in a transaction of another connection (as a person's request would),
/// then starts a tick at 09:00; returns that connection and the running tick.
async fn tick_while_held(
    db: &TestDatabase,
    held: Uuid,
) -> (AsyncPgConnection, JoinHandle<Result<Option<TickStats>, DaemonError>>) {
    let mut other = AsyncPgConnection::establish(db.url()).await.expect("other connection");
    other
        .batch_execute(&format!("BEGIN; SELECT 1 FROM workspaces WHERE id = '{held}' FOR UPDATE"))
        .await
        .expect("hold the row");
    let mut executor = LifecycleExecutor::new(db.pool().clone(), db.url());
    let tick = tokio::spawn(async move { executor.tick(t("2025-06-02T09:00:00Z")).await });
    (other, tick)
}

/// A workspace whose row a person's request holds is not waited for by the batch: the
/// others are committed while it is held, and it is applied on its own once released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_held_by_a_request_is_applied_after_the_batch_without_holding_it_up() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let ids = due_autostops(&mut conn, 10).await;
    let held = ids[3];
    let (mut other, tick) = tick_while_held(&db, held).await;
    let waiting = "SELECT count(*) AS n FROM pg_stat_activity
        WHERE datname = current_database() AND wait_event_type = 'Lock'";
    let deadline = Instant::now() + Duration::from_secs(30);
    while seed::count(&mut conn, STOPS).await < 9 || seed::count(&mut conn, waiting).await == 0 {
        assert!(Instant::now() < deadline, "the batch did not commit around the held row");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(seed::count(&mut conn, STOPS).await, 9, "the held workspace waits");
    other.batch_execute("COMMIT").await.expect("release");

    let stats = tick.await.expect("tick task").expect("tick").expect("leader");
    assert_eq!((stats.applied, stats.failures), (10, 0), "{stats:?}");
    assert_eq!(seed::count(&mut conn, STOPS).await, 10);
    assert_eq!(seed::count(&mut conn, STOP_TRANSACTIONS).await, 2, "the batch, then the held one");
}

/// A workspace whose stop another writer queued while it was held is skipped as stale by
/// the lone apply after the batch, never stopped twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_stopped_by_its_holder_is_skipped_after_the_batch() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let ids = due_autostops(&mut conn, 5).await;
    let held = ids[0];
    let (mut other, tick) = tick_while_held(&db, held).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seed::count(&mut conn, STOPS).await < 4 {
        assert!(Instant::now() < deadline, "the batch did not commit around the held row");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The holder stops the workspace itself (a person's stop, build #2).
    let (template_id, version_id): (Uuid, Uuid) = {
        #[derive(diesel::QueryableByName)]
        struct Ids {
            #[diesel(sql_type = diesel::sql_types::Uuid)]
            template_id: Uuid,
            #[diesel(sql_type = diesel::sql_types::Uuid)]
            template_version_id: Uuid,
        }
        let ids: Ids = diesel_async::RunQueryDsl::get_result(
            diesel::sql_query(
                "SELECT w.template_id, b.template_version_id FROM workspaces w
                 JOIN workspace_builds b ON b.workspace_id = w.id WHERE w.id = $1",
            )
            .bind::<diesel::sql_types::Uuid, _>(held),
            &mut conn,
        )
        .await
        .expect("ids");
        (ids.template_id, ids.template_version_id)
    };
    let owner = seed::user(&mut conn, "carol").await;
    let mut stop = WorkspaceSeed::owned(
        owner,
        template_id,
        version_id,
        Transition::Stop,
        t("2025-06-02T09:00:00Z"),
    );
    stop.status = JobStatus::Pending;
    seed::build(&mut other, held, 2, &stop).await;
    other.batch_execute("COMMIT").await.expect("release");

    let stats = tick.await.expect("tick task").expect("tick").expect("leader");
    assert_eq!((stats.applied, stats.skipped, stats.failures), (4, 1, 0), "{stats:?}");
    let builds =
        format!("SELECT count(*) AS n FROM workspace_builds WHERE workspace_id = '{held}'");
    assert_eq!(seed::count(&mut conn, &builds).await, 2, "no third build");
}

/// A batch that fails as a whole (here a trigger refuses one workspace's build) is applied
/// again one workspace at a time: the others get their decision, only the bad one fails.
#[tokio::test]
async fn a_failed_batch_is_retried_one_workspace_at_a_time() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let ids = due_autostops(&mut conn, 6).await;
    let bad = ids[2];
    conn.batch_execute(&format!(
        "CREATE FUNCTION refuse_build() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'refused build of %', NEW.workspace_id; END $$;
         CREATE TRIGGER refuse_build BEFORE INSERT ON workspace_builds FOR EACH ROW
         WHEN (NEW.workspace_id = '{bad}') EXECUTE FUNCTION refuse_build();"
    ))
    .await
    .expect("trigger");

    let mut executor = LifecycleExecutor::new(db.pool().clone(), db.url());
    let stats = executor.tick(t("2025-06-02T09:00:00Z")).await.expect("tick").expect("leader");
    assert_eq!((stats.applied, stats.failures), (5, 1), "{stats:?}");
    assert_eq!(seed::count(&mut conn, STOPS).await, 5);
    assert_eq!(seed::count(&mut conn, STOP_TRANSACTIONS).await, 5, "one at a time");
    let bad_audits = format!("SELECT count(*) AS n FROM audit_log WHERE resource_id = '{bad}'");
    assert_eq!(seed::count(&mut conn, &bad_audits).await, 0, "nothing half-applied");
}
