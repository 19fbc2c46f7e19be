//! What the dashboard reads and writes, against a real PostgreSQL: its sessions, the pools'
//! 24-hour samples, and the pool board's counts and explanations.

use poolkeeper_tests::seed;

use chrono::{TimeDelta, Utc};
use diesel_async::RunQueryDsl;
use poolkeeper::daemon::{CycleOutcome, PrebuildReconciler};
use poolkeeper::db::enums::{JobStatus, Transition, UserRole};
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::store::auth::{create_token, create_user};
use poolkeeper::store::dashboard_sessions::{close_session, open_session, session_user, SignIn};
use poolkeeper::store::pool_board::{pool_board, PoolActivity};
use poolkeeper::store::pool_samples::{pool_samples_since, record_pool_samples, PoolSample};
use poolkeeper::store::StoreError;
use poolkeeper_core::prebuilds::WithheldReason;
use seed::{t, WorkspaceSeed};

const OPERATORS: [UserRole; 2] = [UserRole::Owner, UserRole::TemplateAdmin];

/// A user of `role` and an API token of `lifetime` for them.
async fn user_with_token(
    db: &TestDatabase,
    name: &str,
    role: UserRole,
    lifetime: TimeDelta,
) -> String {
    let now = Utc::now();
    create_user(db.pool(), name, role, now).await.expect("user");
    create_token(db.pool(), name, "t", lifetime, now).await.expect("token").0
}

fn opened(sign_in: SignIn) -> poolkeeper::store::dashboard_sessions::Session {
    match sign_in {
        SignIn::Opened(session) => session,
        other => panic!("no session: {other:?}"),
    }
}

#[tokio::test]
async fn a_session_is_opened_with_a_token_and_stored_as_a_hash() {
    let db = TestDatabase::new().await;
    let token = user_with_token(&db, "olivia", UserRole::Owner, TimeDelta::days(1)).await;
    let now = Utc::now();
    let session = opened(
        open_session(db.pool(), &token, &OPERATORS, now, TimeDelta::hours(12)).await.expect("open"),
    );
    assert_eq!(session.user.username, "olivia");
    assert_eq!(session.expires_at, now + TimeDelta::hours(12));
    let found = session_user(db.pool(), &session.secret, now).await.expect("lookup").expect("live");
    assert_eq!(
        (found.user.username.as_str(), found.csrf_token.as_str()),
        ("olivia", session.csrf_token.as_str())
    );
    let mut conn = db.conn().await;
    let plain = format!(
        "SELECT count(*) AS n FROM dashboard_sessions WHERE id_hash = '{}'",
        session.secret
    );
    assert_eq!(seed::count(&mut conn, plain.as_str()).await, 0, "the secret itself is not stored");
    assert_eq!(seed::count(&mut conn, "SELECT count(*) AS n FROM dashboard_sessions").await, 1);
    // Expired at its end.
    let later = session.expires_at;
    assert_eq!(session_user(db.pool(), &session.secret, later).await.expect("lookup"), None);
    assert_eq!(session_user(db.pool(), "pks_forged", now).await.expect("lookup"), None);
}

#[tokio::test]
async fn members_and_unknown_tokens_get_no_session() {
    let db = TestDatabase::new().await;
    let member = user_with_token(&db, "max", UserRole::Member, TimeDelta::days(1)).await;
    let now = Utc::now();
    match open_session(db.pool(), &member, &OPERATORS, now, TimeDelta::hours(12))
        .await
        .expect("open")
    {
        SignIn::RoleRefused(user) => assert_eq!(user.role, UserRole::Member),
        other => panic!("a member signed in: {other:?}"),
    }
    let unknown = open_session(db.pool(), "pk_nope", &OPERATORS, now, TimeDelta::hours(12)).await;
    assert_eq!(unknown.expect("open"), SignIn::UnknownToken);
    let admin = user_with_token(&db, "tara", UserRole::TemplateAdmin, TimeDelta::days(1)).await;
    opened(
        open_session(db.pool(), &admin, &OPERATORS, now, TimeDelta::hours(12)).await.expect("open"),
    );
    let mut conn = db.conn().await;
    assert_eq!(seed::count(&mut conn, "SELECT count(*) AS n FROM dashboard_sessions").await, 1);
}

#[tokio::test]
async fn a_session_ends_with_its_token_its_user_or_a_sign_out() {
    let db = TestDatabase::new().await;
    // A token of one hour: the session of twelve hours stops with it.
    let token = user_with_token(&db, "olivia", UserRole::Owner, TimeDelta::hours(1)).await;
    let now = Utc::now();
    let open = || open_session(db.pool(), &token, &OPERATORS, now, TimeDelta::hours(12));
    let first = opened(open().await.expect("open"));
    assert!(first.expires_at <= now + TimeDelta::hours(1), "{}", first.expires_at);

    let mut conn = db.conn().await;
    diesel::sql_query("UPDATE users SET status = 'suspended' WHERE username = 'olivia'")
        .execute(&mut conn)
        .await
        .expect("suspend");
    assert_eq!(session_user(db.pool(), &first.secret, now).await.expect("lookup"), None);
    diesel::sql_query("UPDATE users SET status = 'active' WHERE username = 'olivia'")
        .execute(&mut conn)
        .await
        .expect("activate");
    assert!(session_user(db.pool(), &first.secret, now).await.expect("lookup").is_some());

    assert!(close_session(db.pool(), &first.secret).await.expect("sign out"));
    assert_eq!(session_user(db.pool(), &first.secret, now).await.expect("lookup"), None);
    assert!(!close_session(db.pool(), &first.secret).await.expect("again"));

    let second = opened(open().await.expect("open"));
    diesel::sql_query("DELETE FROM api_tokens").execute(&mut conn).await.expect("revoke");
    assert_eq!(session_user(db.pool(), &second.secret, now).await.expect("lookup"), None);
    assert_eq!(seed::count(&mut conn, "SELECT count(*) AS n FROM dashboard_sessions").await, 0);
}

fn sample(preset_id: uuid::Uuid, at: &str, desired: i32, eligible: i32) -> PoolSample {
    PoolSample { preset_id, sampled_at: t(at), desired, eligible }
}

#[tokio::test]
async fn pool_samples_keep_one_row_per_five_minutes_for_a_day() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (_, version_id) = seed::template(&mut conn, "go").await;
    let preset = seed::preset(&mut conn, version_id, "small", 3).await;
    let fence = seed::lead(&db, "prebuilds").await;
    let record = |at: &'static str, desired: i64, eligible: i64| {
        let fence = fence.clone();
        let pool = db.pool().clone();
        async move {
            record_pool_samples(&pool, &fence, t(at), &[(preset, desired, eligible)])
                .await
                .expect("record")
        }
    };
    record("2025-06-02T10:01:00Z", 3, 1).await;
    // The same bucket: the later cycle's figures win.
    record("2025-06-02T10:03:30Z", 3, 2).await;
    record("2025-06-02T10:06:00Z", 3, 3).await;
    let all = pool_samples_since(db.pool(), t("2025-06-01T00:00:00Z")).await.expect("read");
    assert_eq!(
        all,
        vec![
            sample(preset, "2025-06-02T10:00:00Z", 3, 2),
            sample(preset, "2025-06-02T10:05:00Z", 3, 3)
        ]
    );
    // A day later: what is older than 24 h goes in the same transaction.
    record("2025-06-03T10:04:00Z", 4, 0).await;
    let all = pool_samples_since(db.pool(), t("2025-06-01T00:00:00Z")).await.expect("read");
    assert_eq!(
        all,
        vec![
            sample(preset, "2025-06-02T10:05:00Z", 3, 3),
            sample(preset, "2025-06-03T10:00:00Z", 4, 0)
        ]
    );
}

#[tokio::test]
async fn a_deposed_leader_records_no_sample() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (_, version_id) = seed::template(&mut conn, "go").await;
    let preset = seed::preset(&mut conn, version_id, "small", 3).await;
    let fence = seed::lead(&db, "prebuilds").await;
    diesel::sql_query("UPDATE leader_leases SET holder = 'other', token = token + 1")
        .execute(&mut conn)
        .await
        .expect("take over");
    let refused = record_pool_samples(db.pool(), &fence, Utc::now(), &[(preset, 3, 0)]).await;
    assert!(matches!(refused, Err(StoreError::Fenced { .. })), "{refused:?}");
    assert_eq!(seed::count(&mut conn, "SELECT count(*) AS n FROM pool_samples").await, 0);
}

#[tokio::test]
async fn the_first_reconciler_cycle_of_each_bucket_samples_its_pools() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (_, version_id) = seed::template(&mut conn, "go").await;
    let preset = seed::preset(&mut conn, version_id, "small", 3).await;
    // The samples are the exported series' figures: the daemon's reconciler always has metrics.
    let metrics = std::sync::Arc::new(poolkeeper::telemetry::Metrics::new());
    let mut reconciler =
        PrebuildReconciler::new(db.pool().clone(), db.url(), seed::CONFIG, 2).with_metrics(metrics);
    let now = t("2025-06-02T10:00:10Z");
    assert!(matches!(reconciler.cycle(now).await.expect("cycle"), CycleOutcome::Ran(_)));
    seed::complete_pending_jobs(&mut conn, now).await;
    let later = t("2025-06-02T10:05:10Z");
    assert!(matches!(reconciler.cycle(later).await.expect("cycle"), CycleOutcome::Ran(_)));
    let since = t("2025-06-02T09:00:00Z");
    let samples = pool_samples_since(db.pool(), since).await.expect("read");
    let figures: Vec<(uuid::Uuid, i32, i32)> =
        samples.iter().map(|s| (s.preset_id, s.desired, s.eligible)).collect();
    assert_eq!(figures, vec![(preset, 3, 0), (preset, 3, 3)]);
    // Later cycles of the same bucket write nothing; the next bucket's first one does.
    let only_count = "SELECT count(*) AS n FROM pool_samples";
    diesel::sql_query("DELETE FROM pool_samples").execute(&mut conn).await.expect("clear");
    reconciler.cycle(t("2025-06-02T10:09:59Z")).await.expect("cycle");
    assert_eq!(seed::count(&mut conn, only_count).await, 0);
    reconciler.cycle(t("2025-06-02T10:10:00Z")).await.expect("cycle");
    assert_eq!(seed::count(&mut conn, only_count).await, 1);
}

#[tokio::test]
async fn the_pool_board_counts_the_last_hour_and_day_and_explains_the_plan() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template_id, version_id) = seed::template(&mut conn, "go").await;
    let preset = seed::preset(&mut conn, version_id, "small", 3).await;
    let now = Utc::now();
    let prebuild = |at| WorkspaceSeed::prebuild(template_id, version_id, preset, at);
    // Made 3 hours ago (in the day, not the hour), and 20 minutes ago.
    seed::workspace(&mut conn, prebuild(now - TimeDelta::hours(3))).await;
    let claimed = seed::workspace(&mut conn, prebuild(now - TimeDelta::minutes(20))).await;
    // A failure half a minute ago: the backoff (one minute) withholds the creates.
    let failed =
        WorkspaceSeed { status: JobStatus::Failed, ..prebuild(now - TimeDelta::seconds(30)) };
    seed::workspace(&mut conn, failed).await;
    diesel::sql_query(
        "UPDATE provisioner_jobs SET error = 'apply: quota exceeded' WHERE status = 'failed'",
    )
    .execute(&mut conn)
    .await
    .expect("error");
    // The second prebuild is claimed by alice ten minutes ago.
    let alice = seed::user(&mut conn, "alice").await;
    let claim = WorkspaceSeed {
        preset_id: Some(preset),
        ..WorkspaceSeed::owned(
            alice,
            template_id,
            version_id,
            Transition::Start,
            now - TimeDelta::minutes(10),
        )
    };
    seed::build(&mut conn, claimed, 2, &claim).await;
    diesel::sql_query("UPDATE workspace_builds SET reason = 'claim' WHERE build_number = 2")
        .execute(&mut conn)
        .await
        .expect("claim reason");
    diesel::sql_query("UPDATE workspaces SET owner_id = $1 WHERE id = $2")
        .bind::<diesel::sql_types::Uuid, _>(alice)
        .bind::<diesel::sql_types::Uuid, _>(claimed)
        .execute(&mut conn)
        .await
        .expect("hand over");

    let rows = pool_board(db.pool(), now, seed::CONFIG).await.expect("board");
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(
        (row.template.as_str(), row.version.as_str(), row.preset.as_str()),
        ("go", "v1", "small")
    );
    assert!(row.active_version);
    assert_eq!(row.last_hour, PoolActivity { created: 2, failed: 1, claimed: 1 });
    assert_eq!(row.last_day, PoolActivity { created: 3, failed: 1, claimed: 1 });
    assert_eq!(row.last_failure.as_ref().map(|(_, e)| e.as_str()), Some("apply: quota exceeded"));
    assert_eq!((row.state.desired, row.state.eligible), (3, 1));
    assert_eq!(row.target, "default");
    let withheld = row.withheld.as_ref().expect("withheld creates");
    assert_eq!((withheld.count, withheld.reasons.as_slice()), (2, &[WithheldReason::Backoff][..]));
}
