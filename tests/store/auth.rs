//! Bearer-token authentication against a real PostgreSQL.

use chrono::TimeDelta;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use poolkeeper::db::enums::UserRole;
use poolkeeper::db::schema::api_tokens;
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::store::auth::{authenticate, create_token, create_user};
use poolkeeper_tests::seed::t;

/// Every API request authenticates: recording the token's use on each would make every read
/// a write. It is recorded at most once a minute per token.
#[tokio::test]
async fn a_tokens_last_use_is_written_at_most_once_a_minute() {
    let db = TestDatabase::new().await;
    let start = t("2025-06-02T09:00:00Z");
    create_user(db.pool(), "alice", UserRole::Member, chrono::Utc::now()).await.expect("user");
    let (secret, _) =
        create_token(db.pool(), "alice", "cli", TimeDelta::days(1), start).await.expect("token");
    let last_used = || async {
        let mut conn = db.conn().await;
        api_tokens::table
            .select(api_tokens::last_used_at)
            .first::<Option<chrono::DateTime<chrono::Utc>>>(&mut conn)
            .await
            .expect("token row")
    };
    assert_eq!(last_used().await, None);
    for (seconds, expected) in [(0, 0), (30, 0), (59, 0), (60, 60), (61, 60), (150, 150)] {
        let at = start + TimeDelta::seconds(seconds);
        let user = authenticate(db.pool(), &secret, at).await.expect("authenticate");
        assert!(user.is_some(), "the token authenticates at +{seconds}s");
        let recorded = start + TimeDelta::seconds(expected);
        assert_eq!(last_used().await, Some(recorded), "after a request at +{seconds}s");
    }
}
