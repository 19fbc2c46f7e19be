//! `poolkeeper migrate` against a real (throw-away) PostgreSQL.

use std::process::{Command, Output};

use poolkeeper::db::migrate;
use poolkeeper::db::test_db::TestDatabase;

fn poolkeeper_migrate(url: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_poolkeeper"))
        .arg("migrate")
        .args(extra)
        .env("POOLKEEPER_DATABASE_URL", url)
        .output()
        .expect("run poolkeeper")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn migrate_applies_then_reports_up_to_date_then_reverts() {
    let db = TestDatabase::empty().await;
    let count = migrate::known_versions().expect("embedded migrations").len();

    let first = poolkeeper_migrate(db.url(), &[]);
    assert!(first.status.success(), "{first:?}");
    assert!(stdout(&first).starts_with(&format!("applied {count} migration(s): ")), "{first:?}");

    let second = poolkeeper_migrate(db.url(), &[]);
    assert!(second.status.success(), "{second:?}");
    assert_eq!(stdout(&second).trim(), "the database is up to date");

    let reverted = poolkeeper_migrate(db.url(), &["--revert-all"]);
    assert!(reverted.status.success(), "{reverted:?}");
    assert!(stdout(&reverted).starts_with(&format!("reverted {count} migration(s): ")));
}

#[test]
fn migrate_fails_clearly_without_a_database_and_hides_the_password() {
    // Port 1 on loopback: nothing listens there.
    let output = poolkeeper_migrate("postgres://pk:hunter2@127.0.0.1:1/pk", &[]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error: cannot connect to the database"), "{stderr}");
    assert!(stderr.contains("postgres://127.0.0.1:1/pk"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
