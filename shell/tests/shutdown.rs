//! The daemon binary under signals and a database restart: SIGTERM mid-cycle (proven to land
//! between the cycle's first and last write) exits 0 with no partial state, a second signal
//! exits at once (timed), and a PostgreSQL restart is survived by the daemon and a
//! provisioner (readiness follows the database, the pool converges after).

mod common;
#[path = "../../tests/support/seed.rs"]
mod seed;

use std::time::{Duration, Instant};

use common::{args, free_addr, wait_http, wait_until, Proc};
use diesel_async::RunQueryDsl;
use poolkeeper::db::local_server::LocalServer;
use poolkeeper::db::pool::{self, PoolConfig};
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::db::DbPool;

const LONG: Duration = Duration::from_secs(90);
/// "At once": the second signal ends the process without waiting for anything.
const AT_ONCE: Duration = Duration::from_secs(3);

const ORPHAN_WORKSPACES: &str = "SELECT count(*) AS n FROM workspaces w
    WHERE NOT EXISTS (SELECT 1 FROM workspace_builds b WHERE b.workspace_id = w.id)";
const BUILDS_WITHOUT_JOB: &str = "SELECT count(*) AS n FROM workspace_builds b
    LEFT JOIN provisioner_jobs j ON j.id = b.job_id WHERE j.id IS NULL";
const WORKSPACES: &str = "SELECT count(*) AS n FROM workspaces";
const START_JOBS: &str =
    "SELECT count(*) AS n FROM provisioner_jobs WHERE transition = 'start' AND status = 'pending'";
/// Live prebuilds whose latest build is a succeeded start with every agent ready.
const READY_PREBUILDS: &str = "SELECT count(*) AS n FROM workspaces w
    JOIN LATERAL (SELECT * FROM workspace_builds b WHERE b.workspace_id = w.id
                  ORDER BY b.build_number DESC LIMIT 1) b ON true
    JOIN provisioner_jobs j ON j.id = b.job_id
    WHERE w.owner_id = 'c42fdf75-3097-471c-8c33-fb52454d81c0' AND NOT w.deleted
      AND b.transition = 'start' AND j.status = 'succeeded'
      AND NOT EXISTS (SELECT 1 FROM workspace_agents a
                      WHERE a.build_id = b.id AND a.lifecycle_state <> 'ready')";
const UNFINISHED_JOBS: &str = "SELECT count(*) AS n FROM provisioner_jobs
    WHERE status IN ('pending', 'running', 'canceling')";

async fn count(pool: &DbPool, sql: &str) -> i64 {
    let mut conn = pool.get().await.expect("connection");
    seed::count(&mut conn, sql).await
}

fn daemon_args(url: &str, listen: std::net::SocketAddr, interval: &str) -> Vec<String> {
    common::daemon_args(
        url,
        listen,
        interval,
        &["--max-retry-delay", "1", "--backoff-interval", "1", "--job-heartbeat-timeout", "3"],
    )
}

fn provisioner_args(url: &str) -> Vec<String> {
    args(&[
        "provisioner",
        "--database-url",
        url,
        "--poll-interval",
        "200ms",
        "--heartbeat-interval",
        "200ms",
        "--sim-duration",
        "200ms",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_cycle_exits_zero_and_leaves_no_partial_state() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    // Two templates: the first cycle plans 10 x 5 creates for "go" and 5 for "held". A test
    // transaction holds the "held" template's row lock, so that preset's creates (their
    // foreign key check needs a KEY SHARE lock on it) cannot commit: the signal is certain
    // to land between the cycle's first and last write.
    let (_, version_id) = seed::template(&mut conn, "go").await;
    for i in 0..10 {
        seed::preset(&mut conn, version_id, &format!("p{i}"), 5).await;
    }
    let (held_template, held_version) = seed::template(&mut conn, "held").await;
    seed::preset(&mut conn, held_version, "held", 5).await;
    let planned = 55;
    diesel::sql_query("BEGIN").execute(&mut conn).await.expect("begin");
    diesel::sql_query("SELECT id FROM templates WHERE id = $1 FOR UPDATE")
        .bind::<diesel::sql_types::Uuid, _>(held_template)
        .execute(&mut conn)
        .await
        .expect("lock the held template");
    let listen = free_addr();
    // One preset per create transaction, so that the held preset's transaction is the only
    // one that blocks.
    let mut args = daemon_args(db.url(), listen, "600");
    args.extend(["--prebuild-create-batch".to_owned(), "5".to_owned()]);
    let mut daemon = Proc::spawn("daemon", &args);
    let blocked = "SELECT count(*) AS n FROM pg_stat_activity
        WHERE datname = current_database() AND wait_event_type = 'Lock'";
    wait_until("every unheld create to commit and the held one to block", LONG, || async {
        count(db.pool(), WORKSPACES).await == planned - 5 && count(db.pool(), blocked).await > 0
    })
    .await;
    let before_signal = count(db.pool(), WORKSPACES).await;
    daemon.signal("TERM");
    let after_signal = count(db.pool(), WORKSPACES).await;
    wait_until("the signal to be logged", LONG, || async {
        daemon.log_contains("shutting down after the current action")
    })
    .await;
    let running_after_signal = daemon.exited().is_none();
    // The cycle in progress finishes its writes once the lock goes, then the daemon exits.
    diesel::sql_query("ROLLBACK").execute(&mut conn).await.expect("rollback");
    let status = daemon.wait_exit(LONG).await;
    let workspaces = count(db.pool(), WORKSPACES).await;
    let orphans = count(db.pool(), ORPHAN_WORKSPACES).await;
    let jobless = count(db.pool(), BUILDS_WITHOUT_JOB).await;
    let jobs = count(db.pool(), START_JOBS).await;
    assert!(
        0 < before_signal && after_signal < planned,
        "the signal must land mid-cycle: {before_signal}..{after_signal} of {planned} created"
    );
    assert!(running_after_signal, "the daemon exited before its cycle finished");
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", daemon.log_tail(3000));
    assert_eq!(orphans, 0, "workspaces without a build");
    assert_eq!(jobless, 0, "builds without a job");
    assert_eq!(workspaces, jobs, "every created workspace has exactly its start job");
    assert_eq!(workspaces, planned, "the cycle in progress finished its writes");
    assert!(daemon.log_contains("daemon stopped"), "{}", daemon.log_tail(3000));
    println!(
        "shutdown: SIGTERM mid-cycle: {before_signal}..{after_signal} of {planned} workspaces \
         created at the signal, exit 0, workspaces {workspaces}, start jobs {jobs}, \
         violations: 0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (_, version_id) = seed::template(&mut conn, "go").await;
    seed::preset(&mut conn, version_id, "small", 2).await;
    // Hold the presets table: the daemon's first prebuild cycle blocks on it, so the
    // graceful shutdown after the first signal cannot finish.
    diesel::sql_query("BEGIN").execute(&mut conn).await.expect("begin");
    diesel::sql_query("LOCK TABLE presets IN ACCESS EXCLUSIVE MODE")
        .execute(&mut conn)
        .await
        .expect("lock");
    let listen = free_addr();
    let mut daemon = Proc::spawn("daemon", &daemon_args(db.url(), listen, "600"));
    let blocked = "SELECT count(*) AS n FROM pg_stat_activity
        WHERE datname = current_database() AND wait_event_type = 'Lock'";
    wait_until("the daemon's cycle to block on the lock", LONG, || async {
        count(db.pool(), blocked).await > 0
    })
    .await;
    wait_http(listen, "/healthz", 200, LONG).await;
    daemon.signal("TERM");
    wait_until("the first signal to be logged", LONG, || async {
        daemon.log_contains("shutting down after the current action")
    })
    .await;
    assert_eq!(daemon.exited(), None, "the blocked cycle cannot have finished");
    let signaled = Instant::now();
    daemon.signal("TERM");
    let status = daemon.wait_exit(LONG).await;
    let exit_after = signaled.elapsed();
    diesel::sql_query("ROLLBACK").execute(&mut conn).await.expect("rollback");
    assert_eq!(status.and_then(|s| s.code()), Some(130), "{}", daemon.log_tail(3000));
    assert!(exit_after < AT_ONCE, "exited {exit_after:?} after the second signal");
    println!(
        "shutdown: second signal: exit 130 {:.0} ms after it (bound {} ms) while the cycle \
         was still blocked, violations: 0",
        exit_after.as_secs_f64() * 1000.0,
        AT_ONCE.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_is_survived_and_readiness_follows_it() {
    let mut server = tokio::task::spawn_blocking(LocalServer::start)
        .await
        .expect("start task")
        .expect("a private PostgreSQL");
    let url = server.url("postgres");
    let mut migrate = Proc::spawn("migrate", &args(&["migrate", "--database-url", &url]));
    let status = migrate.wait_exit(LONG).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", migrate.log_tail(3000));

    let config = PoolConfig {
        max_size: 4,
        connect_timeout: Duration::from_secs(5),
        ..PoolConfig::default()
    };
    let db = pool::build(&url, &config).expect("pool");
    let preset_id = {
        let mut conn = db.get().await.expect("connection");
        let (_, version_id) = seed::template(&mut conn, "go").await;
        seed::preset(&mut conn, version_id, "small", 3).await
    };
    let listen = free_addr();
    let mut daemon = Proc::spawn("daemon", &daemon_args(&url, listen, "1"));
    let mut provisioner = Proc::spawn("provisioner", &provisioner_args(&url));
    wait_http(listen, "/readyz", 200, LONG).await;
    wait_until("the pool to fill", LONG, || async { count(&db, READY_PREBUILDS).await == 3 }).await;

    tokio::task::block_in_place(|| server.stop_postgres()).expect("stop postgres");
    wait_http(listen, "/readyz", 503, LONG).await;
    assert_eq!(daemon.exited(), None, "the daemon outlives the database");
    assert_eq!(provisioner.exited(), None, "the provisioner outlives the database");
    tokio::task::block_in_place(|| server.start_postgres()).expect("start postgres");
    wait_http(listen, "/readyz", 200, LONG).await;

    // Converges after the restart: a bigger pool is built.
    let db = pool::build(&url, &config).expect("pool after the restart");
    {
        let mut conn = db.get().await.expect("connection");
        diesel::sql_query("UPDATE presets SET desired_instances = 5 WHERE id = $1")
            .bind::<diesel::sql_types::Uuid, _>(preset_id)
            .execute(&mut conn)
            .await
            .expect("grow the pool");
    }
    wait_until("the pool to converge after the restart", LONG, || async {
        count(&db, READY_PREBUILDS).await == 5 && count(&db, UNFINISHED_JOBS).await == 0
    })
    .await;
    assert_eq!(count(&db, ORPHAN_WORKSPACES).await, 0);
    assert_eq!(daemon.exited(), None, "{}", daemon.log_tail(3000));
    assert_eq!(provisioner.exited(), None, "{}", provisioner.log_tail(3000));
    daemon.signal("TERM");
    provisioner.signal("TERM");
    let daemon_status = daemon.wait_exit(LONG).await;
    let provisioner_status = provisioner.wait_exit(LONG).await;
    println!(
        "shutdown: database restart: readyz 200 -> 503 -> 200, pool 3 -> 5 ready, daemon exit \
         {:?}, provisioner exit {:?}, violations: 0",
        daemon_status.and_then(|s| s.code()),
        provisioner_status.and_then(|s| s.code())
    );
    assert_eq!(daemon_status.and_then(|s| s.code()), Some(0), "{}", daemon.log_tail(3000));
    assert_eq!(
        provisioner_status.and_then(|s| s.code()),
        Some(0),
        "{}",
        provisioner.log_tail(3000)
    );
}
