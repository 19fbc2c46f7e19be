//! The daemon binary's connections: each role (API, each loop, the embedded worker, the
//! listener) connects under its own name in `pg_stat_activity` (the timeouts that come with
//! each role are tested in-process: tests/daemon_faults.rs).

mod common;
#[path = "../../tests/support/seed.rs"]
mod seed;

use std::time::Duration;

use common::{args, free_addr, wait_http, wait_until, Proc};
use diesel_async::RunQueryDsl;
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
        &args(&[
            "run",
            "--database-url",
            db.url(),
            "--listen",
            &listen.to_string(),
            "--provisioner",
            "simulated",
            "--prebuild-interval",
            "1",
            "--lifecycle-interval",
            "1",
            "--lock-timeout",
            "7",
        ]),
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
