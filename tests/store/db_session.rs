//! What every poolkeeper connection sets up for its session, read back from the server.

use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use poolkeeper::db::pool::{establish, SessionSettings};
use poolkeeper::db::test_db::TestDatabase;

#[derive(diesel::QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    value: String,
}

async fn setting(conn: &mut diesel_async::AsyncPgConnection, name: &str) -> String {
    let row: Setting = diesel::sql_query("SELECT current_setting($1) AS value")
        .bind::<Text, _>(name)
        .get_result(conn)
        .await
        .expect("setting");
    row.value
}

/// The bounds and the name of a role's session; and JIT compilation off: poolkeeper's
/// statements are short or index-driven, and compiling the lifecycle snapshot's plan took
/// longer (about 240 ms) than anything it could save.
#[tokio::test]
async fn a_session_has_its_bounds_its_name_and_no_jit() {
    let db = TestDatabase::new().await;
    // The test server runs with JIT off; a production server's default is on.
    let mut admin = db.conn().await;
    let database: Setting = diesel::sql_query("SELECT current_database()::text AS value")
        .get_result(&mut admin)
        .await
        .expect("database");
    let database = database.value;
    diesel::sql_query(format!("ALTER DATABASE \"{database}\" SET jit = on"))
        .execute(&mut admin)
        .await
        .expect("jit on");
    let mut conn =
        establish(db.url(), &SessionSettings::for_role("lifecycle")).await.expect("connect");
    assert_eq!(setting(&mut conn, "application_name").await, "poolkeeper-lifecycle");
    assert_eq!(setting(&mut conn, "statement_timeout").await, "1min");
    assert_eq!(setting(&mut conn, "lock_timeout").await, "10s");
    assert_eq!(setting(&mut conn, "idle_in_transaction_session_timeout").await, "1min");
    assert_eq!(setting(&mut conn, "jit").await, "off");
}

/// The last statement the server saw from backend `pid`.
async fn last_statement(admin: &mut diesel_async::AsyncPgConnection, pid: i32) -> String {
    let row: Setting =
        diesel::sql_query("SELECT query AS value FROM pg_stat_activity WHERE pid = $1")
            .bind::<diesel::sql_types::Integer, _>(pid)
            .get_result(admin)
            .await
            .expect("the backend's activity");
    row.value
}

/// A connection handed back a moment ago is handed out again as it is; one idle for a second
/// or more is first tested with `SELECT 1` (a connection that fails it is replaced). Read
/// from the server's own record of each backend's last statement.
#[tokio::test]
async fn only_a_connection_idle_a_while_is_tested_before_it_is_handed_out() {
    use poolkeeper::db::pool::{build, PoolConfig};

    #[derive(diesel::QueryableByName)]
    struct Pid {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }
    let db = TestDatabase::new().await;
    let mut admin = db.conn().await;
    let pool = build(db.url(), &PoolConfig { max_size: 1, ..PoolConfig::default() }).expect("pool");
    let pid = {
        let mut conn = pool.get().await.expect("checkout");
        let row: Pid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
            .get_result(&mut conn)
            .await
            .expect("pid");
        row.pid
    };
    drop(pool.get().await.expect("checkout at once"));
    assert_eq!(last_statement(&mut admin, pid).await, "SELECT pg_backend_pid() AS pid");

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    drop(pool.get().await.expect("checkout after a second"));
    assert_eq!(last_statement(&mut admin, pid).await, "SELECT 1", "tested after idling");
}
