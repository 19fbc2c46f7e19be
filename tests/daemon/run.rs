//! The whole daemon in-process: the first cycle fills a pool, a preset change wakes the
//! prebuild loop through LISTEN (the poll interval is far away), shutdown returns.

use poolkeeper_tests::seed;

use std::time::{Duration, Instant};

use poolkeeper::daemon::http::HttpState;
use poolkeeper::daemon::{run, DaemonSettings, LifecycleExecutor};
use poolkeeper::db::enums::Transition;
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::provisioner::CancellationToken;
use poolkeeper_core::prebuilds::ReconcilerConfig;
use seed::{t, WorkspaceSeed};

const LIVE_PREBUILDS: &str = "SELECT count(*) AS n FROM workspaces
    WHERE owner_id = 'c42fdf75-3097-471c-8c33-fb52454d81c0' AND NOT deleted";

/// Cap of the condition waits: generous, a slow machine must not fail them.
const WAIT_CAP: Duration = Duration::from_secs(60);

/// Waits for a condition the daemon brings about in real time (polled, capped at
/// [`WAIT_CAP`]); returns how long it took.
async fn eventually(db: &TestDatabase, sql: &str, expected: i64) -> Duration {
    let started = Instant::now();
    let mut conn = db.conn().await;
    loop {
        if seed::count(&mut conn, sql).await == expected {
            return started.elapsed();
        }
        assert!(started.elapsed() < WAIT_CAP, "{sql} never reached {expected} in {WAIT_CAP:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_fills_pools_wakes_on_preset_changes_and_shuts_down() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (_, version_id) = seed::template(&mut conn, "go").await;
    seed::preset(&mut conn, version_id, "small", 2).await;
    let settings = seed::daemon_settings(db.url(), Duration::from_secs(600));
    let state = HttpState::default();
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(run(settings, db.pool().clone(), state.clone(), shutdown.clone()));
    let filled = eventually(&db, LIVE_PREBUILDS, 2).await;
    assert!(state.ready.load(std::sync::atomic::Ordering::Relaxed));

    seed::preset(&mut conn, version_id, "large", 1).await;
    // The next poll is 600 s away: only the LISTEN wake-up can bring this in time.
    let woken = eventually(&db, LIVE_PREBUILDS, 3).await;
    assert!(state.metrics.encode().contains("poolkeeper_prebuilds_desired"));

    shutdown.cancel();
    let stopping = Instant::now();
    tokio::time::timeout(WAIT_CAP, daemon).await.expect("shutdown in time").expect("daemon task");
    println!(
        "daemon: pool filled in {:.1}s, woken by a preset change in {:.1}s (poll 600 s), \
         shut down in {:.1}s",
        filled.as_secs_f64(),
        woken.as_secs_f64(),
        stopping.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn lifecycle_tick_applies_due_decisions() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template_id, version_id) = seed::template(&mut conn, "go").await;
    let alice = seed::user(&mut conn, "alice").await;
    let seed = WorkspaceSeed::owned(
        alice,
        template_id,
        version_id,
        Transition::Start,
        t("2025-06-02T08:00:00Z"),
    );
    seed::workspace(&mut conn, seed).await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query("UPDATE workspace_builds SET deadline = '2025-06-02T08:30:00Z'"),
        &mut conn,
    )
    .await
    .expect("deadline");
    let mut executor = LifecycleExecutor::new(db.pool().clone(), db.url());
    let stats = executor.tick(t("2025-06-02T09:00:00Z")).await.expect("tick").expect("leader");
    assert_eq!((stats.workspaces, stats.applied, stats.failures), (1, 1, 0));
    let stats = executor.tick(t("2025-06-02T09:01:00Z")).await.expect("tick").expect("leader");
    assert_eq!(stats.applied, 0, "the stop is in flight");
}

/// The loop wakes at the earliest `next_check_at` of its plans, not only every interval: a
/// backoff that ends is acted on at once even when the poll interval is ten minutes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prebuild_loop_wakes_when_a_backoff_ends() {
    use std::time::Instant;

    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template_id, version_id) = seed::template(&mut conn, "go").await;
    let preset_id = seed::preset(&mut conn, version_id, "small", 1).await;
    // A prebuild build that failed just now: creation backs off for 3 s.
    let failed = WorkspaceSeed {
        status: poolkeeper::db::enums::JobStatus::Failed,
        ..WorkspaceSeed::prebuild(template_id, version_id, preset_id, chrono::Utc::now())
    };
    seed::workspace(&mut conn, failed).await;
    let settings = DaemonSettings {
        reconciler: ReconcilerConfig {
            backoff_interval_secs: 3,
            failure_hard_limit: 0,
            ..seed::CONFIG
        },
        ..seed::daemon_settings(db.url(), Duration::from_secs(600))
    };
    let started = Instant::now();
    let shutdown = CancellationToken::new();
    let daemon =
        tokio::spawn(run(settings, db.pool().clone(), HttpState::default(), shutdown.clone()));
    let pending = "SELECT count(*) AS n FROM workspaces w
        JOIN workspace_builds b ON b.workspace_id = w.id
        JOIN provisioner_jobs j ON j.id = b.job_id
        WHERE w.owner_id = 'c42fdf75-3097-471c-8c33-fb52454d81c0' AND j.status = 'pending'";
    let deadline = Instant::now() + Duration::from_secs(60);
    while seed::count(&mut conn, pending).await == 0 {
        assert!(Instant::now() < deadline, "no create after the backoff ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(2), "created during the backoff: {took:?}");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), daemon).await.expect("shutdown").expect("task");
    println!(
        "created {:.1}s after start, once the 3 s backoff ended (interval 600 s)",
        took.as_secs_f64()
    );
}

/// Prebuilds of the preset whose start build's job is pending: creates the reconciler made.
const PENDING_PREBUILDS: &str = "SELECT count(*) AS n FROM workspaces w
    JOIN workspace_builds b ON b.workspace_id = w.id
    JOIN provisioner_jobs j ON j.id = b.job_id
    WHERE w.owner_id = 'c42fdf75-3097-471c-8c33-fb52454d81c0' AND j.status = 'pending'";

/// Prebuild cycles the daemon has run, from its metrics.
fn prebuild_cycles(state: &HttpState) -> u64 {
    let text = state.metrics.encode();
    text.lines()
        .find_map(|line| {
            line.strip_prefix("poolkeeper_reconciliation_cycle_duration_seconds_count ")
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until the daemon's first two prebuild cycles have run: the first, and the one its
/// LISTEN connection's start asks for (a notification may have been missed before it).
/// After them the loop sleeps for its interval unless something wakes it.
async fn settled(state: &HttpState) {
    let started = Instant::now();
    while prebuild_cycles(state) < 2 {
        assert!(started.elapsed() < WAIT_CAP, "no second cycle in {WAIT_CAP:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A claim takes a prebuild out of the pool; the reconciler hears of it from its change feed
/// (rules §8) and replaces it at once, not at its next cycle ten minutes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_prebuild_is_replaced_at_once() {
    use poolkeeper::store::claim::{claim_or_create, ClaimRequest};

    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template_id, version_id) = seed::template(&mut conn, "go").await;
    let preset_id = seed::preset(&mut conn, version_id, "small", 1).await;
    let created = chrono::Utc::now() - chrono::TimeDelta::minutes(5);
    seed::workspace(
        &mut conn,
        WorkspaceSeed::prebuild(template_id, version_id, preset_id, created),
    )
    .await;
    let alice = seed::user(&mut conn, "alice").await;
    let state = HttpState::default();
    let shutdown = CancellationToken::new();
    let settings = seed::daemon_settings(db.url(), Duration::from_secs(600));
    let daemon = tokio::spawn(run(settings, db.pool().clone(), state.clone(), shutdown.clone()));
    settled(&state).await;
    assert_eq!(seed::count(&mut conn, PENDING_PREBUILDS).await, 0, "the pool was full");
    let cycles = prebuild_cycles(&state);

    let request = ClaimRequest {
        user_id: alice,
        template_id,
        preset_id: Some(preset_id),
        name: "mine".to_owned(),
        autostart_schedule: None,
        ttl_secs: None,
        parameters: std::collections::BTreeMap::new(),
    };
    let outcome = claim_or_create(db.pool(), chrono::Utc::now(), &request).await.expect("claim");
    assert!(outcome.claimed, "the ready prebuild was handed over");
    let replaced = eventually(&db, PENDING_PREBUILDS, 1).await;
    assert!(prebuild_cycles(&state) > cycles, "a cycle after the claim made the replacement");

    shutdown.cancel();
    tokio::time::timeout(WAIT_CAP, daemon).await.expect("shutdown in time").expect("daemon task");
    println!(
        "claimed prebuild replaced {:.1}s after the claim (interval 600 s)",
        replaced.as_secs_f64()
    );
}

/// A prebuild's job that fails is heard of from the change feed: the failure is counted and
/// the pool is built again once the backoff ends, with the next cycle ten minutes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_prebuild_job_is_heard_of_from_the_feed() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (_, version_id) = seed::template(&mut conn, "go").await;
    seed::preset(&mut conn, version_id, "small", 1).await;
    let settings = DaemonSettings {
        reconciler: ReconcilerConfig {
            backoff_interval_secs: 2,
            failure_hard_limit: 0,
            ..seed::CONFIG
        },
        ..seed::daemon_settings(db.url(), Duration::from_secs(600))
    };
    let state = HttpState::default();
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(run(settings, db.pool().clone(), state.clone(), shutdown.clone()));
    eventually(&db, PENDING_PREBUILDS, 1).await;

    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(
            "UPDATE provisioner_jobs SET status = 'failed', started_at = now(), completed_at = now(),
                    error = 'simulated failure'
             WHERE status = 'pending'",
        ),
        &mut conn,
    )
    .await
    .expect("fail the job");
    let rebuilt = eventually(&db, PENDING_PREBUILDS, 1).await;

    shutdown.cancel();
    tokio::time::timeout(WAIT_CAP, daemon).await.expect("shutdown in time").expect("daemon task");
    println!(
        "failed prebuild rebuilt {:.1}s after its failure (2 s backoff, interval 600 s)",
        rebuilt.as_secs_f64()
    );
}

/// rules §6 against the database: a purge (batches of one workspace or row, so the cursor
/// and the batch loop are exercised) deletes old builds with their jobs and agents, old
/// audit entries; it keeps every build a rule reads, so the
/// lifecycle and prebuild snapshots are the same before and after; a second purge finds
/// nothing; another replica's purge does nothing while this one leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_old_history_but_nothing_a_rule_reads() {
    use diesel_async::RunQueryDsl;
    use poolkeeper::daemon::{Purger, RetentionSettings};
    use poolkeeper::db::enums::JobStatus;
    use poolkeeper::store::retention::Purged;
    use poolkeeper_core::retention::Retention;
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template_id, version_id) = seed::template(&mut conn, "go").await;
    let preset_id = seed::preset(&mut conn, version_id, "small", 1).await;
    let alice = seed::user(&mut conn, "alice").await;
    let now = t("2025-06-02T09:00:00Z");
    let old = |day: u32| t(&format!("2025-03-{day:02}T09:00:00Z"));
    // Alice's workspace: start, stop, start, stop, all old. 4 is the latest, 3 the newest
    // finished start: 1 and 2 may go.
    let step = |transition, day| {
        WorkspaceSeed::owned(alice, template_id, version_id, transition, old(day))
    };
    let mine = seed::workspace(&mut conn, step(Transition::Start, 1)).await;
    for (number, transition) in
        [(2, Transition::Stop), (3, Transition::Start), (4, Transition::Stop)]
    {
        seed::build(&mut conn, mine, number, &step(transition, number as u32)).await;
    }
    // A failed prebuild being deleted: its failed start is what the backoff reads, kept.
    let failed = WorkspaceSeed {
        status: JobStatus::Failed,
        ..WorkspaceSeed::prebuild(template_id, version_id, preset_id, old(1))
    };
    let prebuild = seed::workspace(&mut conn, failed).await;
    let deleting = WorkspaceSeed {
        transition: Transition::Delete,
        status: JobStatus::Pending,
        ..WorkspaceSeed::prebuild(template_id, version_id, preset_id, old(2))
    };
    seed::build(&mut conn, prebuild, 2, &deleting).await;
    // A recent workspace: nothing of it is old enough.
    let recent = WorkspaceSeed::owned(alice, template_id, version_id, Transition::Start, now);
    seed::workspace(&mut conn, recent).await;
    diesel::sql_query(
        "INSERT INTO audit_log (at, actor, action, resource_type, diff) VALUES
           ($1, 'cli', 'old', 'workspace', '{}'), ($1, 'cli', 'old', 'workspace', '{}'),
           ($2, 'cli', 'new', 'workspace', '{}')",
    )
    .bind::<diesel::sql_types::Timestamptz, _>(t("2024-05-01T00:00:00Z"))
    .bind::<diesel::sql_types::Timestamptz, _>(now)
    .execute(&mut conn)
    .await
    .expect("audit entries");
    let snapshots = async |conn: &mut diesel_async::AsyncPgConnection| {
        let lifecycle = poolkeeper::store::lifecycle::load_lifecycle_snapshot(conn, now)
            .await
            .expect("lifecycle snapshot");
        let prebuilds =
            poolkeeper::store::prebuilds::load_prebuild_snapshot(conn, now, seed::CONFIG)
                .await
                .expect("prebuild snapshot")
                .snapshot;
        (lifecycle, prebuilds)
    };
    let before = snapshots(&mut conn).await;
    let settings = RetentionSettings {
        retention: Retention { builds_secs: 30 * 86_400, audit_secs: 365 * 86_400 },
        interval: Duration::from_secs(3600),
        batch: 1,
    };
    let mut purger = Purger::new(db.pool().clone(), db.url(), settings);
    let mut other = Purger::new(db.pool().clone(), db.url(), settings);
    let purged = purger.purge(now).await.expect("purge").expect("the first purger leads");
    assert_eq!(purged, Purged { builds: 2, agents: 2, audit: 2 });
    assert_eq!(other.purge(now).await.expect("second replica"), None, "one leader");
    let builds =
        format!("SELECT count(*) AS n FROM workspace_builds WHERE workspace_id = '{mine}'");
    assert_eq!(seed::count(&mut conn, &builds).await, 2);
    let orphans = "SELECT count(*) AS n FROM provisioner_jobs j
        WHERE NOT EXISTS (SELECT 1 FROM workspace_builds b WHERE b.job_id = j.id)";
    assert_eq!(seed::count(&mut conn, orphans).await, 0, "each purged build's job went with it");
    assert_eq!(snapshots(&mut conn).await, before, "the rules read the same rows");
    let again = purger.purge(now).await.expect("purge").expect("still the leader");
    assert_eq!(again, Purged::default());
}

/// A purge batch made with a fence whose lease moved to another replica deletes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_purger_deletes_nothing() {
    use diesel_async::RunQueryDsl;
    use poolkeeper::store::leases::acquire_or_renew;
    use poolkeeper::store::retention::purge_audit;
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    diesel::sql_query(
        "INSERT INTO audit_log (at, actor, action, resource_type, diff)
         VALUES ('2020-01-01T00:00:00Z', 'cli', 'old', 'workspace', '{}')",
    )
    .execute(&mut conn)
    .await
    .expect("audit entry");
    let stale = seed::lead(&db, "retention").await;
    diesel::sql_query("UPDATE leader_leases SET expires_at = now() - interval '1 second'")
        .execute(&mut conn)
        .await
        .expect("expire the lease");
    acquire_or_renew(&mut conn, "retention", "another", Duration::from_secs(60))
        .await
        .expect("lease query")
        .expect("taken over");
    let cutoff = t("2025-01-01T00:00:00Z");
    let err = purge_audit(db.pool(), &stale, cutoff, 10).await.expect_err("fenced");
    assert_eq!(err.label(), "fenced");
    assert_eq!(seed::count(&mut conn, "SELECT count(*) AS n FROM audit_log").await, 1);
}
