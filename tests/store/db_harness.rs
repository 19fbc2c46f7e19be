//! The per-test database harness (`TestDatabase`) and the throw-away server under it
//! (`LocalServer`): isolation, parallel use, independence from any one tokio runtime, and
//! that a server never outlives its owner.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use poolkeeper::db::enums::{UserRole, UserStatus};
use poolkeeper::db::models::NewUser;
use poolkeeper::db::schema::users;
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::db::{LocalServer, PREBUILDS_USER_ID};
use uuid::Uuid;

fn new_user(username: &str) -> NewUser {
    NewUser {
        id: Uuid::new_v4(),
        username: username.to_owned(),
        email: format!("{username}@example.com"),
        status: UserStatus::Active,
        role: UserRole::Member,
        is_system: false,
        quiet_hours_schedule: None,
    }
}

async fn count_users_named(db: &TestDatabase, username: &str) -> i64 {
    let mut conn = db.conn().await;
    users::table
        .filter(users::username.eq(username))
        .count()
        .get_result(&mut conn)
        .await
        .expect("count users")
}

#[tokio::test]
async fn test_databases_are_isolated() {
    let (a, b) = tokio::join!(TestDatabase::new(), TestDatabase::new());
    assert_ne!(a.name(), b.name());
    assert_ne!(a.url(), b.url());

    let mut conn = a.conn().await;
    diesel::insert_into(users::table)
        .values(&new_user("alice"))
        .execute(&mut conn)
        .await
        .expect("insert into a");

    assert_eq!(count_users_named(&a, "alice").await, 1);
    assert_eq!(count_users_named(&b, "alice").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_can_be_created_concurrently_and_are_migrated() {
    let dbs = futures_util::future::join_all((0..6).map(|_| TestDatabase::new())).await;
    for db in &dbs {
        let mut conn = db.conn().await;
        let prebuilds: i64 = users::table
            .filter(users::id.eq(PREBUILDS_USER_ID))
            .count()
            .get_result(&mut conn)
            .await
            .expect("count the prebuilds user");
        assert_eq!(prebuilds, 1, "{} is migrated", db.name());
    }
}

/// Each `#[tokio::test]` has its own runtime, which is gone when the test ends; the shared
/// state must survive that (it holds a server, never a pool or a connection).
#[test]
fn the_harness_outlives_each_tokio_runtime() {
    for round in 0..2 {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let db = TestDatabase::new().await;
            let username = format!("round{round}");
            let mut conn = db.conn().await;
            diesel::insert_into(users::table)
                .values(&new_user(&username))
                .execute(&mut conn)
                .await
                .expect("insert");
            drop(conn);
            assert_eq!(count_users_named(&db, &username).await, 1);
        });
    }
}

/// Poll (up to `limit`) for an effect of another process; nothing else to wait on.
fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

fn is_gone(port: u16, dir: &Path) -> bool {
    !dir.exists() && TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err()
}

#[test]
fn stopping_a_local_server_removes_its_directory() {
    let server = LocalServer::start().expect("start a local PostgreSQL");
    let (port, dir) = (server.port(), server.dir().to_path_buf());
    assert!(dir.join("data").is_dir());
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok());
    server.stop().expect("stop");
    // stop() waits for the watchdog, which removes the directory last.
    assert!(is_gone(port, &dir), "server on port {port} or {} still there", dir.display());
}

const HOLD_ENV: &str = "POOLKEEPER_TEST_HOLD_LOCAL_SERVER";

/// Runs in a child process (see below): start a server, say where it is, wait to be killed.
#[test]
#[ignore = "helper process of a_local_server_dies_with_its_owner"]
fn hold_a_local_server_until_killed() {
    if std::env::var_os(HOLD_ENV).is_none() {
        return;
    }
    let server = LocalServer::start().expect("start a local PostgreSQL");
    println!("READY {} {}", server.port(), server.dir().display());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[test]
fn a_local_server_dies_with_its_owner() {
    let exe = std::env::current_exe().expect("test executable");
    // The test's name as the harness knows it: its module path below the crate.
    let holder = match module_path!().split_once("::") {
        Some((_, module)) => format!("{module}::hold_a_local_server_until_killed"),
        None => "hold_a_local_server_until_killed".to_owned(),
    };
    let mut child = Command::new(exe)
        .args(["--exact", holder.as_str(), "--ignored", "--nocapture"])
        .env(HOLD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the holder process");
    let stdout = child.stdout.take().expect("stdout");
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("READY ").map(str::to_owned));
    let Some(ready) = ready else {
        let _ = child.kill();
        panic!("the holder process did not start a server");
    };
    let (port, dir) = ready.split_once(' ').expect("READY <port> <dir>");
    let (port, dir): (u16, PathBuf) = (port.parse().expect("port"), PathBuf::from(dir));
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok(), "server is up");

    // SIGKILL: no destructor, no handler runs in the owner.
    child.kill().expect("kill the holder");
    child.wait().expect("reap the holder");

    assert!(
        eventually(Duration::from_secs(20), || is_gone(port, &dir)),
        "server on port {port} or {} outlived its owner",
        dir.display()
    );
}
