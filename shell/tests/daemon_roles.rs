//! The daemon binary's connections: each role (API, each loop, the embedded worker, the
//! listener) connects under its own name in `pg_stat_activity` (the timeouts that come with
//! each role are tested in-process: tests/daemon_faults.rs), and a claim is served while
//! the prebuild loop's every apply waits on a lock; the notification dispatcher runs on a
//! pool and task of its own.

mod common;
#[path = "../../tests/support/seed.rs"]
mod seed;
#[path = "../../tests/support/webhook_receiver.rs"]
mod webhook_receiver;

use std::time::Duration;

use common::{free_addr, wait_http, wait_until, Proc};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use poolkeeper::db::enums::UserRole;
use poolkeeper::db::test_db::TestDatabase;

const LONG: Duration = Duration::from_secs(90);

#[derive(diesel::QueryableByName, Debug)]
struct Session {
    #[diesel(sql_type = diesel::sql_types::Text)]
    application_name: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_connects_under_its_own_name() {
    let db = TestDatabase::new().await;
    {
        let mut conn = db.conn().await;
        let (_, version_id) = seed::template(&mut conn, "go").await;
        seed::preset(&mut conn, version_id, "small", 2).await;
    }
    let listen = free_addr();
    let mut daemon = Proc::spawn(
        "daemon",
        &common::daemon_args(
            db.url(),
            listen,
            "1",
            &["--provisioner", "simulated", "--lock-timeout", "7"],
        ),
    );
    wait_http(listen, "/readyz", 200, LONG).await;
    let ready = "SELECT count(*) AS n FROM workspaces w JOIN workspace_builds b
        ON b.workspace_id = w.id JOIN provisioner_jobs j ON j.id = b.job_id
        WHERE w.owner_id = 'c42fdf75-3097-471c-8c33-fb52454d81c0' AND j.status = 'succeeded'";
    wait_until("the pool to fill through the embedded worker", LONG, || async {
        let mut conn = db.conn().await;
        seed::count(&mut conn, ready).await == 2
    })
    .await;
    let mut conn = db.conn().await;
    let sessions: Vec<Session> = diesel::sql_query(
        "SELECT DISTINCT application_name FROM pg_stat_activity
         WHERE datname = current_database() AND application_name LIKE 'poolkeeper-%'
         ORDER BY application_name",
    )
    .load(&mut conn)
    .await
    .expect("sessions");
    let names: Vec<&str> = sessions.iter().map(|s| s.application_name.as_str()).collect();
    for role in ["lifecycle", "listen", "prebuilds", "provisioner"] {
        assert!(names.contains(&format!("poolkeeper-{role}").as_str()), "{role}: {names:?}");
    }
    daemon.signal("TERM");
    let status = daemon.wait_exit(LONG).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", daemon.log_tail(3000));
    println!("daemon roles: sessions {names:?}");
}

/// The connection budget: each loop applies through its own pool, so a loop whose every
/// apply waits on a lock cannot take the connection a claim or a health check needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_gets_a_connection_while_the_prebuild_loop_is_stuck_on_locks() {
    let db = TestDatabase::new().await;
    let token = {
        let mut conn = db.conn().await;
        let (_, version_id) = seed::template(&mut conn, "go").await;
        for name in ["a", "b", "c"] {
            seed::preset(&mut conn, version_id, name, 3).await;
        }
        poolkeeper::store::auth::create_user(
            db.pool(),
            "alice",
            UserRole::Member,
            chrono::Utc::now(),
        )
        .await
        .expect("user");
        let (token, _) = poolkeeper::store::auth::create_token(
            db.pool(),
            "alice",
            "test",
            chrono::TimeDelta::hours(1),
            chrono::Utc::now(),
        )
        .await
        .expect("token");
        token
    };
    // Every create refers to its preset (a foreign key check takes `FOR KEY SHARE`), so
    // holding the presets `FOR UPDATE` stops every prebuild apply on a lock.
    let mut holder = AsyncPgConnection::establish(db.url()).await.expect("holder connection");
    holder.batch_execute("BEGIN; SELECT id FROM presets FOR UPDATE").await.expect("hold presets");

    let listen = free_addr();
    let mut daemon = Proc::spawn(
        "daemon",
        &common::daemon_args(db.url(), listen, "1", &["--pool-size", "4", "--lock-timeout", "120"]),
    );
    wait_http(listen, "/readyz", 200, LONG).await;
    let stuck = "SELECT count(*) AS n FROM pg_stat_activity
                 WHERE application_name = 'poolkeeper-prebuilds' AND wait_event_type = 'Lock'";
    wait_until("the prebuild loop's applies to wait on the presets", LONG, || async {
        let mut conn = db.conn().await;
        seed::count(&mut conn, stuck).await >= 1
    })
    .await;

    let body = r#"{"template": "go", "name": "dev"}"#;
    let claim = tokio::task::spawn_blocking(move || {
        common::http_post_json(listen, "/api/v1/workspaces", &token, body, LONG)
    })
    .await
    .expect("claim task");
    let (status, response) = claim.expect("the API answers the claim");
    assert_eq!(status, 201, "{response}");
    assert_eq!(common::http_status(listen, "/readyz"), Some(200));
    let mut conn = db.conn().await;
    let still_stuck = seed::count(&mut conn, stuck).await;
    assert!(still_stuck >= 1, "the claim was served while the loop still waited");

    holder.batch_execute("ROLLBACK").await.expect("release");
    daemon.signal("TERM");
    let status = daemon.wait_exit(LONG).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", daemon.log_tail(3000));
    println!("connection budget: claim 201 while {still_stuck} prebuild applies waited on locks");
}

/// With a webhook configured, `run` delivers the outbox from a supervised task of its own
/// (`notifications` in /readyz's task list when it dies), on connections named
/// `poolkeeper-notifications`, and counts what it sent in /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_delivers_notifications_from_its_own_task_and_pool() {
    use poolkeeper::db::schema::notifications;
    use webhook_receiver::{Receiver, Reply};
    let db = TestDatabase::new().await;
    let receiver = Receiver::start("daemon-secret", &[Reply::Status(200)]).await;
    let user = {
        let mut conn = db.conn().await;
        seed::user(&mut conn, "nina").await
    };
    let listen = free_addr();
    let hook = receiver.url();
    let mut daemon = Proc::spawn(
        "daemon",
        &common::daemon_args(
            db.url(),
            listen,
            "1",
            &[
                "--notifications-webhook-url",
                &hook,
                "--notifications-webhook-secret",
                "daemon-secret",
                "--notifications-interval",
                "200ms",
            ],
        ),
    );
    wait_http(listen, "/readyz", 200, LONG).await;
    let id = uuid::Uuid::new_v4();
    {
        let mut conn = db.conn().await;
        diesel::insert_into(notifications::table)
            .values(poolkeeper::db::models::NewNotification {
                id,
                user_id: user,
                kind: "workspace_dormant".to_owned(),
                dedupe_key: format!("daemon-test:{id}"),
                payload: serde_json::json!({}),
                created_at: None,
            })
            .execute(&mut conn)
            .await
            .expect("enqueue");
    }
    receiver.wait_for(1).await;
    let received = receiver.received();
    assert_eq!(received[0].idempotency_key.as_deref(), Some(id.to_string().as_str()));
    assert!(received[0].signature_valid);
    wait_until("the delivery to be recorded", LONG, || async {
        let mut conn = db.conn().await;
        let sent = format!(
            "SELECT count(*) AS n FROM notifications WHERE id = '{id}' AND status = 'sent'"
        );
        seed::count(&mut conn, &sent).await == 1
    })
    .await;
    let mut conn = db.conn().await;
    let sessions: Vec<Session> = diesel::sql_query(
        "SELECT DISTINCT application_name FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'poolkeeper-notifications'",
    )
    .load(&mut conn)
    .await
    .expect("sessions");
    assert_eq!(sessions.len(), 1, "the dispatcher's own pool: {sessions:?}");
    let metrics = reqwest::get(format!("http://{listen}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    assert!(
        metrics.contains(
            "poolkeeper_notifications_sent_total{method=\"webhook\",kind=\"workspace_dormant\"} 1"
        ),
        "{metrics}"
    );
    daemon.signal("TERM");
    let status = daemon.wait_exit(LONG).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", daemon.log_tail(3000));
    println!("daemon notifications: 1 delivered by the daemon's dispatcher, violations: 0");
}
