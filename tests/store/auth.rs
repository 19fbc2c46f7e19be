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

/// The API's authenticator looks up the secrets of concurrent requests together: each
/// request gets its own answer, whatever the others in its batch were (the same token twice,
/// an expired one, an unknown one, a suspended user's).
#[tokio::test]
async fn concurrent_requests_are_authenticated_together_each_with_its_own_answer() {
    use futures_util::future::join_all;
    use poolkeeper::store::auth::Authenticator;

    let db = TestDatabase::new().await;
    let now = chrono::Utc::now();
    let mut secrets = Vec::new();
    for name in ["alice", "bob", "carol"] {
        create_user(db.pool(), name, UserRole::Member, now).await.expect("user");
        let (secret, _) =
            create_token(db.pool(), name, "cli", TimeDelta::days(1), now).await.expect("token");
        secrets.push((name, secret));
    }
    let (expired, _) =
        create_token(db.pool(), "alice", "old", TimeDelta::seconds(1), now - TimeDelta::hours(1))
            .await
            .expect("expired token");
    let mut conn = db.conn().await;
    diesel::sql_query("UPDATE users SET status = 'suspended' WHERE username = 'carol'")
        .execute(&mut conn)
        .await
        .expect("suspend carol");

    let mut asked: Vec<(Option<&str>, String)> = Vec::new();
    for _ in 0..10 {
        asked.push((Some("alice"), secrets[0].1.clone()));
        asked.push((Some("bob"), secrets[1].1.clone()));
        asked.push((None, secrets[2].1.clone()));
        asked.push((None, expired.clone()));
        asked.push((None, "pk_nobody".to_owned()));
    }
    let tokens = Authenticator::new(db.pool().clone());
    let answers = join_all(asked.iter().map(|(_, secret)| {
        let tokens = tokens.clone();
        async move { tokens.authenticate(secret, now).await }
    }))
    .await;
    for ((expected, _), answer) in asked.iter().zip(answers) {
        let user = answer.expect("authenticate");
        assert_eq!(user.map(|u| u.username).as_deref(), *expected);
    }
    let batches = tokens.batches();
    assert!((1..10).contains(&batches), "50 requests shared {batches} batches");
}
