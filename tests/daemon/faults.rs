//! The daemon under faults injected with real means: a leader whose database path freezes
//! (a TCP proxy that keeps connections open and forwards nothing) must lose leadership
//! within a bounded time, and the other replica must take over and refill the pool.

use poolkeeper_tests::fault_proxy;
use poolkeeper_tests::seed;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fault_proxy::{Fault, FaultProxy};
use poolkeeper::daemon::http::HttpState;
use poolkeeper::daemon::run;
use poolkeeper::db::pool::{self, PoolConfig};
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::provisioner::CancellationToken;

const LIVE_PREBUILDS: &str = "SELECT count(*) AS n FROM workspaces
    WHERE owner_id = 'c42fdf75-3097-471c-8c33-fb52454d81c0' AND NOT deleted";

/// Polls `sql` until it counts `expected`, up to `cap`; returns how long it took.
async fn wait_for_count(db: &TestDatabase, sql: &str, expected: i64, cap: Duration) -> Duration {
    let started = Instant::now();
    let mut conn = db.conn().await;
    loop {
        if seed::count(&mut conn, sql).await == expected {
            return started.elapsed();
        }
        assert!(started.elapsed() < cap, "{sql} did not reach {expected} within {cap:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_takes_over_from_a_leader_whose_database_path_froze() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (_, version_id) = seed::template(&mut conn, "go").await;
    seed::preset(&mut conn, version_id, "small", 2).await;
    let interval = Duration::from_secs(1);

    // Replica A, the first leader, reaches the database through the proxy.
    let proxy = FaultProxy::for_url(db.url()).await;
    let url_a = proxy.url(db.url());
    let pool_a = pool::build(&url_a, &PoolConfig::default()).expect("pool a");
    let shutdown = CancellationToken::new();
    let replica_a = tokio::spawn(run(
        seed::daemon_settings(&url_a, interval),
        pool_a,
        HttpState::default(),
        shutdown.clone(),
    ));
    wait_for_count(&db, LIVE_PREBUILDS, 2, Duration::from_secs(30)).await;

    // Replica B joins while A leads: it must stay idle.
    let replica_b = tokio::spawn(run(
        seed::daemon_settings(db.url(), interval),
        db.pool().clone(),
        HttpState::default(),
        shutdown.clone(),
    ));
    tokio::time::sleep(3 * interval).await;
    assert_eq!(seed::count(&mut conn, LIVE_PREBUILDS).await, 2, "B created beside the leader");

    // A's path hangs; then two people claim the pool's prebuilds.
    proxy.set(Fault::Freeze);
    let frozen_at = Instant::now();
    let claimer = seed::user(&mut conn, "claimer").await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(
            "UPDATE workspaces SET owner_id = $1
             WHERE owner_id = 'c42fdf75-3097-471c-8c33-fb52454d81c0'",
        )
        .bind::<diesel::sql_types::Uuid, _>(claimer),
        &mut conn,
    )
    .await
    .expect("claim the prebuilds");
    let bound = 3 * interval + Duration::from_secs(30);
    let took = wait_for_count(&db, LIVE_PREBUILDS, 2, bound + Duration::from_secs(10)).await;
    let frozen_chunks = proxy.counts().frozen_chunks.load(Ordering::Relaxed);
    assert!(frozen_chunks > 0, "A never tried to reach the database while frozen");
    assert!(took <= bound, "takeover took {took:?}, beyond {bound:?}");

    shutdown.cancel();
    proxy.set(Fault::Reset);
    let _ = tokio::time::timeout(Duration::from_secs(20), replica_b).await;
    replica_a.abort();
    println!(
        "takeover after a frozen leader: refilled in {:.1}s (bound {}s), frozen chunks {frozen_chunks}, since freeze {:.1}s",
        took.as_secs_f64(),
        bound.as_secs(),
        frozen_at.elapsed().as_secs_f64()
    );
}

/// Leadership moves between a cycle's load and its apply: the deposed leader's plan must
/// write nothing, so the pool is not created twice.
#[tokio::test]
async fn a_plan_applied_after_leadership_moved_writes_nothing() {
    use poolkeeper::store::leases::acquire_or_renew;
    use poolkeeper::store::prebuilds::{apply_preset_plan, load_prebuild_snapshot};
    use poolkeeper::store::StoreError;

    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (_, version_id) = seed::template(&mut conn, "go").await;
    seed::preset(&mut conn, version_id, "small", 3).await;
    let lease = Duration::from_secs(30);
    let old = acquire_or_renew(&mut conn, "prebuilds", "replica-a", lease)
        .await
        .expect("lease")
        .expect("a leads");
    let now = chrono::Utc::now();
    let snapshot = load_prebuild_snapshot(&mut conn, now, seed::CONFIG).await.expect("load");
    let plans = poolkeeper_core::prebuilds::plan(now, &snapshot.snapshot);

    // A's lease runs out; B takes over and fills the pool.
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query("UPDATE leader_leases SET expires_at = now() - interval '1 second'"),
        &mut conn,
    )
    .await
    .expect("expire");
    let new = acquire_or_renew(&mut conn, "prebuilds", "replica-b", lease)
        .await
        .expect("lease")
        .expect("b takes over");
    assert_eq!(new.token, old.token + 1, "a takeover bumps the token");
    for (preset, preset_plan) in snapshot.snapshot.presets.iter().zip(&plans) {
        apply_preset_plan(db.pool(), &new, now, preset, preset_plan).await.expect("b applies");
    }
    assert_eq!(seed::count(&mut conn, LIVE_PREBUILDS).await, 3);

    // A, unaware, applies the plan it made before.
    for (preset, preset_plan) in snapshot.snapshot.presets.iter().zip(&plans) {
        let refused = apply_preset_plan(db.pool(), &old, now, preset, preset_plan).await;
        assert!(matches!(refused, Err(StoreError::Fenced { .. })), "{refused:?}");
    }
    assert_eq!(seed::count(&mut conn, LIVE_PREBUILDS).await, 3, "the deposed leader created");
}

/// Every connection says who it is, and a lock wait behind a stuck holder ends at the
/// role's lock_timeout instead of hanging the loop.
#[tokio::test]
async fn a_lock_wait_behind_a_stuck_holder_ends_at_the_lock_timeout() {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    use poolkeeper::db::enums::Transition;
    use poolkeeper::db::pool::SessionSettings;
    use poolkeeper::store::lifecycle::{apply_lifecycle_decision, load_lifecycle_snapshot};

    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template_id, version_id) = seed::template(&mut conn, "go").await;
    let alice = seed::user(&mut conn, "alice").await;
    let now = seed::t("2025-06-02T09:00:00Z");
    let seeded = seed::WorkspaceSeed::owned(
        alice,
        template_id,
        version_id,
        Transition::Start,
        seed::t("2025-06-02T08:00:00Z"),
    );
    let ws = seed::workspace(&mut conn, seeded).await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query("UPDATE workspace_builds SET deadline = '2025-06-02T08:30:00Z'"),
        &mut conn,
    )
    .await
    .expect("deadline");
    let snapshot = load_lifecycle_snapshot(&mut conn, now).await.expect("load");
    let decision = poolkeeper_core::lifecycle::plan(now, &snapshot).remove(0);
    assert!(decision.has_effect());

    let session = SessionSettings {
        lock_timeout: Duration::from_millis(500),
        ..SessionSettings::for_role("lifecycle")
    };
    let config = PoolConfig { max_size: 2, session, ..PoolConfig::default() };
    let lifecycle_pool = pool::build(db.url(), &config).expect("pool");
    // A stuck holder: a transaction that locked the workspace row and went quiet.
    let mut stuck = diesel_async::AsyncPgConnection::establish(db.url()).await.expect("connect");
    stuck
        .batch_execute(&format!("BEGIN; SELECT 1 FROM workspaces WHERE id = '{ws}' FOR UPDATE"))
        .await
        .expect("hold the row");
    let fence = seed::lead(&db, "lifecycle").await;
    let started = Instant::now();
    let applied = tokio::time::timeout(
        Duration::from_secs(30),
        apply_lifecycle_decision(&lifecycle_pool, &fence, now, &decision),
    )
    .await
    .expect("the lock wait never ended");
    let waited = started.elapsed();
    let err = applied.expect_err("applied through a held lock");
    assert!(err.to_string().contains("lock timeout"), "{err}");
    assert!(waited >= Duration::from_millis(500), "no lock wait: {waited:?}");
    let named = "SELECT count(*) AS n FROM pg_stat_activity
        WHERE datname = current_database() AND application_name = 'poolkeeper-lifecycle'";
    assert!(seed::count(&mut conn, named).await >= 1, "the connection is not named");
    println!("lock wait behind a stuck holder ended after {:.2}s: {err}", waited.as_secs_f64());
}
