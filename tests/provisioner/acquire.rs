//! Job acquisition and reaping: each job runs once however many workers compete, nothing
//! uncommitted is taken, cancelled jobs never start, and stale jobs are failed with a reason.

use poolkeeper_tests::provisioner_seed as seed;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use poolkeeper::db::enums::{FailureKind, JobStatus, Transition};
use poolkeeper::db::schema::provisioner_jobs;
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::provisioner::{acquire_next_job, reap_stale_jobs, ReaperConfig};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 2, 9, 0, 0).single().expect("valid instant")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_never_take_the_same_job() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let mut all = HashSet::new();
    for _ in 0..60 {
        all.insert(seed::job(&mut conn, Transition::Start, false, None).await);
    }
    let take_all = |worker: &'static str| {
        let pool = db.pool().clone();
        tokio::spawn(async move {
            let mut conn = pool.get().await.expect("connection");
            let mut taken = Vec::new();
            while let Some(job) = acquire_next_job(&mut conn, worker, now()).await.expect("acquire")
            {
                assert_eq!(job.status, JobStatus::Running);
                assert_eq!(job.worker_id.as_deref(), Some(worker));
                taken.push(job.id);
            }
            taken
        })
    };
    let (a, b) = (take_all("worker-a"), take_all("worker-b"));
    let (a, b) = (a.await.expect("worker a"), b.await.expect("worker b"));
    let mut seen = HashSet::new();
    for id in a.iter().chain(&b) {
        assert!(seen.insert(*id), "job {id} was taken twice");
    }
    assert_eq!(seen, all, "every job taken exactly once");
    // Both took part (not a proof of overlap, but a sign the test exercises two workers).
    assert!(!a.is_empty() || !b.is_empty());
}

#[tokio::test]
async fn a_job_of_an_open_transaction_is_not_taken() {
    let db = TestDatabase::new().await;
    let mut writer = db.conn().await;
    let mut worker = db.conn().await;
    diesel::sql_query("BEGIN").execute(&mut writer).await.expect("begin");
    let id = seed::job(&mut writer, Transition::Start, false, None).await;
    assert_eq!(acquire_next_job(&mut worker, "w", now()).await.expect("acquire"), None);
    diesel::sql_query("COMMIT").execute(&mut writer).await.expect("commit");
    let job = acquire_next_job(&mut worker, "w", now()).await.expect("acquire");
    assert_eq!(job.map(|j| j.id), Some(id));
}

#[tokio::test]
async fn acquisition_order_and_cancelled_jobs() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let early = Some(now() - TimeDelta::hours(1));
    let prebuild_start = seed::job(&mut conn, Transition::Start, true, early).await;
    let person_start = seed::job(&mut conn, Transition::Start, false, early).await;
    let person_delete = seed::job(&mut conn, Transition::Delete, false, Some(now())).await;
    let cancelled = seed::job(&mut conn, Transition::Delete, false, early).await;
    diesel::update(provisioner_jobs::table.find(cancelled))
        .set(provisioner_jobs::status.eq(JobStatus::Canceling))
        .execute(&mut conn)
        .await
        .expect("cancel");
    let mut order = Vec::new();
    while let Some(job) = acquire_next_job(&mut conn, "w", now()).await.expect("acquire") {
        order.push(job.id);
    }
    assert_eq!(order, vec![person_delete, person_start, prebuild_start]);
    assert_eq!(seed::job_row(&mut conn, cancelled).await.status, JobStatus::Canceling);
}

#[tokio::test]
async fn stale_jobs_are_reaped_with_a_reason() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let config = ReaperConfig::default();
    // The reaper compares with the database's clock: age the rows relative to it.
    let wall = Utc::now();
    let stale = seed::job(&mut conn, Transition::Start, false, None).await;
    let fresh = seed::job(&mut conn, Transition::Start, false, None).await;
    let old_pending =
        seed::job(&mut conn, Transition::Start, false, Some(wall - TimeDelta::minutes(31))).await;
    let young_pending =
        seed::job(&mut conn, Transition::Start, false, Some(wall - TimeDelta::minutes(29))).await;
    for (id, heartbeat) in
        [(stale, wall - TimeDelta::minutes(6)), (fresh, wall - TimeDelta::minutes(4))]
    {
        diesel::update(provisioner_jobs::table.find(id))
            .set((
                provisioner_jobs::status.eq(JobStatus::Running),
                provisioner_jobs::started_at.eq(heartbeat),
                provisioner_jobs::heartbeat_at.eq(heartbeat),
                provisioner_jobs::worker_id.eq("lost"),
            ))
            .execute(&mut conn)
            .await
            .expect("start");
    }
    // The caller's clock is ignored: an hour ahead changes nothing.
    let ahead = wall + TimeDelta::hours(1);
    let reaped = reap_stale_jobs(db.pool(), ahead, &config).await.expect("reap");
    assert_eq!(reaped, 2);

    let stale = seed::job_row(&mut conn, stale).await;
    assert_eq!(stale.status, JobStatus::Failed);
    assert!(stale.completed_at.is_some_and(|at| at >= wall && at < ahead));
    assert_eq!(stale.failure_kind, Some(FailureKind::Reaped));
    assert!(stale.error.as_deref().is_some_and(|e| e.contains("heartbeat")), "{:?}", stale.error);
    let old_pending = seed::job_row(&mut conn, old_pending).await;
    assert_eq!(old_pending.status, JobStatus::Failed);
    assert_eq!(old_pending.failure_kind, Some(FailureKind::Reaped));
    assert!(old_pending.error.as_deref().is_some_and(|e| e.contains("no provisioner")));
    assert_eq!(seed::job_row(&mut conn, fresh).await.status, JobStatus::Running);
    assert_eq!(seed::job_row(&mut conn, young_pending).await.status, JobStatus::Pending);

    // A shorter heartbeat timeout reaps the other one too.
    let short = ReaperConfig { heartbeat_timeout: Duration::from_secs(60), ..config };
    assert_eq!(reap_stale_jobs(db.pool(), wall, &short).await.expect("reap"), 1);
}
