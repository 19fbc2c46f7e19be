//! Prebuild cycles run in-process against a real PostgreSQL.

use poolkeeper_tests::seed;

use std::sync::Arc;

use poolkeeper::daemon::{CycleOutcome, CycleStats, PrebuildReconciler};
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::store::settings::set_reconciliation_paused;
use poolkeeper::telemetry::Metrics;
use seed::{t, CONFIG};

const LIVE_PREBUILDS: &str = "SELECT count(*) AS n FROM workspaces
    WHERE owner_id = 'c42fdf75-3097-471c-8c33-fb52454d81c0' AND NOT deleted";

fn reconciler(db: &TestDatabase) -> PrebuildReconciler {
    PrebuildReconciler::new(db.pool().clone(), db.url(), CONFIG, 2)
}

fn jobs(outcome: CycleOutcome) -> usize {
    match outcome {
        CycleOutcome::Ran(CycleStats { jobs, failures: 0, .. }) => jobs,
        other => panic!("unexpected outcome {other:?}"),
    }
}

#[tokio::test]
async fn a_pool_fills_settles_rolls_over_and_pauses() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template_id, version_id) = seed::template(&mut conn, "go").await;
    seed::preset(&mut conn, version_id, "small", 3).await;
    let mut daemon = reconciler(&db);
    let now = t("2025-06-02T09:00:00Z");

    assert_eq!(jobs(daemon.cycle(now).await.expect("cycle")), 3);
    seed::complete_pending_jobs(&mut conn, now).await;
    assert_eq!(jobs(daemon.cycle(now).await.expect("cycle")), 0, "a full pool is a no-op");

    let v2 = seed::version(&mut conn, template_id, "v2").await;
    seed::preset(&mut conn, v2, "small", 3).await;
    assert_eq!(jobs(daemon.cycle(now).await.expect("cycle")), 6, "3 deletes + 3 creates");
    seed::complete_pending_jobs(&mut conn, now).await;
    assert_eq!(seed::count(&mut conn, LIVE_PREBUILDS).await, 3);

    set_reconciliation_paused(&mut conn, true, chrono::Utc::now()).await.expect("pause");
    seed::version(&mut conn, template_id, "v3").await;
    assert_eq!(daemon.cycle(now).await.expect("cycle"), CycleOutcome::Paused);
    let pending = "SELECT count(*) AS n FROM provisioner_jobs WHERE status = 'pending'";
    assert_eq!(seed::count(&mut conn, pending).await, 0);
}

#[tokio::test]
async fn concurrent_replicas_never_create_more_than_desired() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (_, version_id) = seed::template(&mut conn, "go").await;
    seed::preset(&mut conn, version_id, "small", 3).await;
    let now = t("2025-06-02T09:00:00Z");
    let mut replicas: Vec<_> = (0..3).map(|_| reconciler(&db)).collect();
    for _ in 0..3 {
        let cycles = replicas.iter_mut().map(|r| r.cycle(now));
        let outcomes = futures_util::future::join_all(cycles).await;
        let leaders = outcomes.iter().filter(|o| matches!(o, Ok(CycleOutcome::Ran(_)))).count();
        assert_eq!(leaders, 1, "exactly one replica leads: {outcomes:?}");
    }
    assert_eq!(seed::count(&mut conn, LIVE_PREBUILDS).await, 3);
}

#[tokio::test]
async fn only_the_leading_replica_exports_the_pool() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (_, version_id) = seed::template(&mut conn, "go").await;
    seed::preset(&mut conn, version_id, "small", 2).await;
    let now = t("2025-06-02T09:00:00Z");
    let (leader_metrics, other_metrics) = (Arc::new(Metrics::new()), Arc::new(Metrics::new()));
    let mut leader = reconciler(&db).with_metrics(leader_metrics.clone());
    let mut other = reconciler(&db).with_metrics(other_metrics.clone());
    assert_eq!(jobs(leader.cycle(now).await.expect("cycle")), 2);
    // A pool state left over from an earlier leadership must not linger.
    other_metrics.set_pool_state(leader_metrics.pool_state());
    assert_eq!(other.cycle(now).await.expect("cycle"), CycleOutcome::NotLeader);

    let state = leader_metrics.pool_state().expect("the leader exports the pool");
    let small: Vec<_> =
        state.presets.iter().map(|p| (p.labels.preset.as_str(), p.desired)).collect();
    assert_eq!(small, [("small", 2)]);
    assert_eq!(state.queue_depth(), Some(2));
    assert_eq!(other_metrics.pool_state(), None);
    assert!(!other_metrics.encode().contains("preset=\"small\""));
}

fn stats(outcome: CycleOutcome) -> CycleStats {
    match outcome {
        CycleOutcome::Ran(stats) => stats,
        other => panic!("unexpected outcome {other:?}"),
    }
}

/// Rules §8: after the first cycle, a cycle plans only the presets whose rows changed (or
/// whose plan is due or unfinished); a quiet cycle plans none; `forget` and the resync
/// interval bring back a full reload.
#[tokio::test]
async fn cycles_plan_only_what_changed_until_a_resync() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (_, version_id) = seed::template(&mut conn, "feed").await;
    let first = seed::preset(&mut conn, version_id, "first", 2).await;
    seed::preset(&mut conn, version_id, "second", 2).await;
    seed::preset(&mut conn, version_id, "third", 2).await;
    let mut daemon = reconciler(&db);
    let now = t("2025-06-02T09:00:00Z");

    let cold = stats(daemon.cycle(now).await.expect("cycle"));
    assert!(cold.full_reload);
    assert_eq!((cold.presets, cold.planned, cold.jobs), (3, 3, 6));
    // The creates were work: the next cycle plans all three again, and sees their rows.
    seed::complete_pending_jobs(&mut conn, now).await;
    let settled = stats(daemon.cycle(now).await.expect("cycle"));
    assert!(!settled.full_reload);
    assert_eq!((settled.planned, settled.jobs), (3, 0));
    let quiet = stats(daemon.cycle(now).await.expect("cycle"));
    assert_eq!((quiet.presets, quiet.planned, quiet.jobs), (3, 0, 0), "nothing changed");

    diesel_async::RunQueryDsl::execute(
        diesel::sql_query("UPDATE presets SET desired_instances = 3 WHERE id = $1")
            .bind::<diesel::sql_types::Uuid, _>(first),
        &mut conn,
    )
    .await
    .expect("raise the desired count");
    let one = stats(daemon.cycle(now).await.expect("cycle"));
    assert!(!one.full_reload);
    assert_eq!((one.planned, one.jobs), (1, 1), "only the changed preset is planned");

    daemon.forget();
    let again = stats(daemon.cycle(now).await.expect("cycle"));
    assert!(again.full_reload);
    assert_eq!(again.planned, 3);

    daemon.release_leadership().await;
    let mut always = reconciler(&db).with_resync_interval(std::time::Duration::ZERO);
    for _ in 0..2 {
        assert!(stats(always.cycle(now).await.expect("cycle")).full_reload);
    }
}
