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
