//! A worker drains a queue back to back: with jobs waiting, it neither waits for a poll or a
//! notification between two jobs nor checks a connection out of the pool (with the pool's
//! liveness check) for each, and every job is completed once.

use poolkeeper_tests::provisioner_seed as seed;

use std::path::PathBuf;
use std::time::Duration;

use diesel::prelude::*;
use diesel_async::pooled_connection::deadpool::Object;
use diesel_async::RunQueryDsl;
use poolkeeper::db::enums::{JobStatus, Transition};
use poolkeeper::db::pool::{self, PoolConfig};
use poolkeeper::db::schema::{audit_log, provisioner_jobs};
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::provisioner::TerraformConfig;
use poolkeeper::provisioner::{run_worker, Backends, CancellationToken, WorkerConfig};
use seed::TemplateSpec;

const JOBS: usize = 12;
/// Far longer than the test may take: a worker that waited for its poll between two jobs
/// would not finish the queue within [`WAIT_CAP`].
const POLL_INTERVAL: Duration = Duration::from_secs(600);
const WAIT_CAP: Duration = Duration::from_secs(60);

fn work_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("poolkeeper-queue-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("work dir");
    dir
}

/// A worker named `worker_id` with a pool of its own, its work directory and its settings
/// (a poll far in the future: only a notification or a queued job makes it act).
fn worker(db: &TestDatabase, worker_id: &str) -> (poolkeeper::db::DbPool, PathBuf, WorkerConfig) {
    let worker_pool = pool::build(db.url(), &PoolConfig { max_size: 4, ..PoolConfig::default() })
        .expect("the worker's pool");
    let work_dir = work_dir();
    let config = WorkerConfig {
        tags: Default::default(),
        worker_id: worker_id.to_owned(),
        poll_interval: POLL_INTERVAL,
        heartbeat_interval: Duration::from_secs(60),
        backends: Backends {
            terraform: TerraformConfig { work_dir: work_dir.clone(), ..TerraformConfig::default() },
            ..Backends::default()
        },
    };
    (worker_pool, work_dir, config)
}

#[tokio::test]
async fn queued_jobs_run_back_to_back_on_one_connection() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let owner = seed::user(&mut conn, "queue", None).await;
    let (template, version) = seed::template(&mut conn, "dev", TemplateSpec::default()).await;
    // Queued before the worker listens: no notification announces them.
    let mut jobs = Vec::new();
    for i in 0..JOBS {
        let ws = seed::workspace(&mut conn, owner, template, &format!("ws{i}"), 0, None).await;
        jobs.push(seed::build(&mut conn, ws, version, owner, 1, Transition::Start, None).await.1);
    }

    let (worker_pool, work_dir, config) = worker(&db, "queue-worker");
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(run_worker(worker_pool.clone(), config, shutdown.clone()));
    for &job in &jobs {
        let done = seed::wait_for_status(&mut conn, job, &[JobStatus::Succeeded], WAIT_CAP).await;
        assert_eq!(done.worker_id.as_deref(), Some("queue-worker"));
    }
    shutdown.cancel();
    let stopped = tokio::time::timeout(WAIT_CAP, worker).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "worker did not stop cleanly: {stopped:?}");

    // Every job completed once.
    let completions: i64 = audit_log::table
        .filter(audit_log::action.eq("build_completed"))
        .count()
        .get_result(&mut conn)
        .await
        .expect("audit entries");
    assert_eq!(completions, JOBS as i64);
    let succeeded: i64 = provisioner_jobs::table
        .filter(provisioner_jobs::status.eq(JobStatus::Succeeded))
        .count()
        .get_result(&mut conn)
        .await
        .expect("jobs");
    assert_eq!(succeeded, JOBS as i64);

    // Each checkout of a pooled connection is recycled (its liveness checked) first: count
    // them over the connections the worker left in its pool (checking each out once more).
    let mut idle = Vec::new();
    for _ in 0..worker_pool.status().available {
        idle.push(worker_pool.get().await.expect("an idle connection"));
    }
    let recycled: usize =
        idle.iter().map(|conn| Object::metrics(conn).recycle_count.saturating_sub(1)).sum();
    assert!(
        recycled < JOBS / 2,
        "{recycled} pool checkouts with a liveness check for {JOBS} queued jobs"
    );
    std::fs::remove_dir_all(&work_dir).ok();
}

/// A long build does not keep the connection that took its job checked out: it is back in
/// the pool once the build has run a second, and the build still completes.
#[tokio::test]
async fn a_long_build_gives_its_connection_back_while_it_runs() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let owner = seed::user(&mut conn, "long", None).await;
    let spec = TemplateSpec {
        source: serde_json::json!({"duration_ms": 4000}),
        ..TemplateSpec::default()
    };
    let (template, version) = seed::template(&mut conn, "slow", spec).await;
    let ws = seed::workspace(&mut conn, owner, template, "slow", 0, None).await;
    let job = seed::build(&mut conn, ws, version, owner, 1, Transition::Start, None).await.1;

    let (worker_pool, work_dir, config) = worker(&db, "long-worker");
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(run_worker(worker_pool.clone(), config, shutdown.clone()));
    seed::wait_for_status(&mut conn, job, &[JobStatus::Running], WAIT_CAP).await;
    // Mid-build (the build takes 4 s; the connection is kept for its first second only).
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let status = worker_pool.status();
    let running = seed::wait_for_status(&mut conn, job, &[JobStatus::Running], WAIT_CAP).await;
    assert_eq!(running.status, JobStatus::Running, "still building when the pool was read");
    assert_eq!(status.size - status.available, 0, "checked out mid-build: {status:?}");
    seed::wait_for_status(&mut conn, job, &[JobStatus::Succeeded], WAIT_CAP).await;
    shutdown.cancel();
    let stopped = tokio::time::timeout(WAIT_CAP, worker).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "worker did not stop cleanly: {stopped:?}");
    std::fs::remove_dir_all(&work_dir).ok();
}
