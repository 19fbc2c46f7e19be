//! Creates batched across presets: whole presets packed into transactions, one audit entry
//! per new workspace, every transaction fenced.

use poolkeeper_tests::seed;

use chrono::{DateTime, Utc};
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::store::leases;
use poolkeeper::store::prebuilds::{
    create_prebuilds, load_prebuild_snapshot, Creates, CREATES_PER_TRANSACTION,
};
use poolkeeper::store::StoreError;
use seed::{t, CONFIG};

fn now() -> DateTime<Utc> {
    t("2025-06-02T09:00:00Z")
}

#[tokio::test]
async fn creates_of_many_presets_are_batched_with_one_audit_entry_per_workspace() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (_, version) = seed::template(&mut conn, "batched").await;
    for i in 0..500 {
        seed::preset(&mut conn, version, &format!("p{i}"), 9).await;
    }
    let snapshot = load_prebuild_snapshot(&mut conn, now(), CONFIG).await.expect("load").snapshot;
    let creates: Vec<Creates> =
        snapshot.presets.iter().map(|p| Creates { preset: p.clone(), count: 9 }).collect();
    let fence = seed::lead(&db, "prebuilds").await;
    let batches = create_prebuilds(db.pool(), &fence, now(), creates, 2).await;
    // 4,500 prebuilds: a few transactions, none split a preset.
    let expected_batches = 4_500usize.div_ceil(CREATES_PER_TRANSACTION);
    assert!(
        batches.len() >= expected_batches && batches.len() <= expected_batches + 1,
        "{}",
        batches.len()
    );
    let mut jobs = 0;
    for batch in batches {
        let by_preset = batch.jobs.expect("batch committed");
        assert_eq!(by_preset.len(), batch.presets.len());
        assert!(by_preset.values().all(|j| j.len() == 9));
        jobs += by_preset.values().map(Vec::len).sum::<usize>();
    }
    assert_eq!(jobs, 4_500);
    assert_eq!(seed::count(&mut conn, "SELECT count(*) AS n FROM workspaces").await, 4_500);
    assert_eq!(
        seed::count(&mut conn, "SELECT count(DISTINCT resource_id) AS n FROM audit_log WHERE action = 'prebuild_create'").await,
        4_500
    );
    assert_eq!(
        seed::count(
            &mut conn,
            "SELECT count(*) AS n FROM audit_log WHERE action = 'prebuild_create'"
        )
        .await,
        4_500
    );
    assert_eq!(
        seed::count(&mut conn, "SELECT count(*) AS n FROM (SELECT preset_id FROM workspace_builds GROUP BY preset_id HAVING count(*) = 9) p").await,
        500
    );
}

#[tokio::test]
async fn batched_creates_under_a_lost_lease_write_nothing() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (_, version) = seed::template(&mut conn, "fenced").await;
    for i in 0..3 {
        seed::preset(&mut conn, version, &format!("p{i}"), 2).await;
    }
    let snapshot = load_prebuild_snapshot(&mut conn, now(), CONFIG).await.expect("load").snapshot;
    let creates: Vec<Creates> =
        snapshot.presets.iter().map(|p| Creates { preset: p.clone(), count: 2 }).collect();
    let stale = seed::lead(&db, "prebuilds").await;
    leases::release(&mut conn, &stale).await.expect("release");
    let batches = create_prebuilds(db.pool(), &stale, now(), creates, 2).await;
    assert_eq!(batches.len(), 1);
    assert!(matches!(batches[0].jobs, Err(StoreError::Fenced { .. })), "{:?}", batches[0].jobs);
    assert_eq!(batches[0].presets.len(), 3);
    assert_eq!(seed::count(&mut conn, "SELECT count(*) AS n FROM workspaces").await, 0);
    assert_eq!(
        seed::count(
            &mut conn,
            "SELECT count(*) AS n FROM audit_log WHERE action = 'prebuild_create'"
        )
        .await,
        0
    );
}
