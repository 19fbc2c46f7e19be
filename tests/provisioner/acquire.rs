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

/// Every combination of a `pool` and a `region` tag (each possibly absent), as job tags.
fn tag_combinations() -> Vec<poolkeeper_core::tags::Tags> {
    let mut all = Vec::new();
    for pool in [None, Some("people"), Some("prebuilds")] {
        for region in [None, Some("eu"), Some("us")] {
            let mut tags = poolkeeper_core::tags::Tags::new();
            if let Some(pool) = pool {
                tags.insert("pool".to_owned(), pool.to_owned());
            }
            if let Some(region) = region {
                tags.insert("region".to_owned(), region.to_owned());
            }
            all.push(tags);
        }
    }
    all
}

fn tags_of(pairs: &[(&str, &str)]) -> poolkeeper_core::tags::Tags {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// rules §6 against the database: workers with different tags drain the queue in turn; each
/// takes exactly the pending jobs its tags cover (as the core's `covers` says, never one
/// more), in queue order, and the jobs no worker covers stay pending.
#[tokio::test]
async fn a_tagged_worker_takes_only_the_jobs_its_tags_cover() {
    use poolkeeper::provisioner::acquire_next_tagged_job;
    use poolkeeper_core::tags::{covers, Tags};
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let mut jobs: Vec<(uuid::Uuid, Tags)> = Vec::new();
    for (i, tags) in tag_combinations().into_iter().cycle().take(27).enumerate() {
        let created = now() + TimeDelta::seconds(i as i64);
        let id = seed::job(&mut conn, Transition::Start, i % 2 == 0, Some(created)).await;
        diesel::update(provisioner_jobs::table.find(id))
            .set(provisioner_jobs::tags.eq(serde_json::json!(tags)))
            .execute(&mut conn)
            .await
            .expect("tag the job");
        jobs.push((id, tags));
    }
    let workers = [
        ("untagged", Tags::new()),
        ("prebuild-fleet", tags_of(&[("pool", "prebuilds"), ("region", "eu")])),
        ("people-eu", tags_of(&[("pool", "people"), ("region", "eu"), ("gpu", "yes")])),
    ];
    let mut taken_by_anyone = HashSet::new();
    for (name, worker_tags) in &workers {
        let mut taken = Vec::new();
        while let Some(job) =
            acquire_next_tagged_job(&mut conn, name, worker_tags, now()).await.expect("acquire")
        {
            taken.push(job.id);
        }
        let expected: Vec<uuid::Uuid> = jobs
            .iter()
            .filter(|(id, tags)| !taken_by_anyone.contains(id) && covers(worker_tags, tags))
            .map(|(id, _)| *id)
            .collect();
        let mut in_order = expected.clone();
        // Queue order: people's jobs first, then the oldest (the seeded jobs are all starts).
        in_order.sort_by_key(|id| {
            let i = jobs.iter().position(|(j, _)| j == id).expect("seeded");
            (i % 2 == 0, i)
        });
        assert_eq!(taken, in_order, "{name} took exactly the jobs it covers, in queue order");
        assert!(!taken.is_empty(), "{name} had work");
        taken_by_anyone.extend(taken);
    }
    let left: Vec<&Tags> =
        jobs.iter().filter(|(id, _)| !taken_by_anyone.contains(id)).map(|(_, t)| t).collect();
    assert!(!left.is_empty());
    assert!(left.iter().all(|tags| workers.iter().all(|(_, w)| !covers(w, tags))));
    let pending = "SELECT count(*) AS n FROM provisioner_jobs WHERE status = 'pending'";
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let count: Count = diesel::sql_query(pending).get_result(&mut conn).await.expect("count");
    assert_eq!(count.n as usize, left.len());
}

/// rules §6: a job gets its tags from the version of its build, whichever path wrote the
/// two rows (a trigger of the database), as the core's `job_tags` says: the version's tags,
/// and a prebuild's job the prebuild tags over them; a job of an untagged version has none.
#[tokio::test]
async fn jobs_carry_the_tags_of_their_version() {
    use diesel_async::AsyncConnection;
    use poolkeeper::db::enums::BuildReason;
    use poolkeeper::db::models::NewWorkspaceBuild;
    use poolkeeper::db::schema::{template_versions, workspace_builds};
    use poolkeeper_core::tags::job_tags;
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let owner = seed::user(&mut conn, "alice", None).await;
    let (template, version) = seed::template(&mut conn, "go", seed::TemplateSpec::default()).await;
    let (_, untagged) = seed::template(&mut conn, "plain", seed::TemplateSpec::default()).await;
    let version_tags = tags_of(&[("pool", "people"), ("region", "eu")]);
    let prebuild_tags = tags_of(&[("pool", "prebuilds")]);
    diesel::update(template_versions::table.find(version))
        .set((
            template_versions::provisioner_tags.eq(serde_json::json!(version_tags)),
            template_versions::prebuild_tags.eq(serde_json::json!(prebuild_tags)),
        ))
        .execute(&mut conn)
        .await
        .expect("tag the version");
    let workspace = seed::workspace(&mut conn, owner, template, "dev", 0, None).await;
    let (_, person_job) =
        seed::build(&mut conn, workspace, version, owner, 1, Transition::Start, None).await;
    let (_, plain_job) =
        seed::build(&mut conn, workspace, untagged, owner, 2, Transition::Stop, None).await;
    // A prebuild's job, and its build, in one transaction as the store writes them.
    let prebuild_job = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            let job = seed::job(conn, Transition::Start, true, None).await;
            diesel::insert_into(workspace_builds::table)
                .values(&NewWorkspaceBuild {
                    id: uuid::Uuid::new_v4(),
                    workspace_id: workspace,
                    build_number: 3,
                    template_version_id: version,
                    preset_id: None,
                    transition: Transition::Start,
                    reason: BuildReason::Prebuild,
                    initiator_id: owner,
                    job_id: job,
                    deadline: None,
                    max_deadline: None,
                    provisioner_state: None,
                    created_at: None,
                })
                .execute(conn)
                .await?;
            Ok(job)
        })
        .await
        .expect("a prebuild's build and job");
    let tags = async |conn: &mut diesel_async::AsyncPgConnection, id| {
        let job = seed::job_row(conn, id).await;
        serde_json::from_value::<poolkeeper_core::tags::Tags>(job.tags).expect("tags")
    };
    let none = poolkeeper_core::tags::Tags::new();
    assert_eq!(tags(&mut conn, person_job).await, job_tags(&version_tags, &prebuild_tags, false));
    assert_eq!(tags(&mut conn, prebuild_job).await, job_tags(&version_tags, &prebuild_tags, true));
    assert_eq!(tags(&mut conn, plain_job).await, none);
}

/// Workers acquire jobs all day on pooled connections: the statement must be planned once
/// per connection, not before every acquisition (a plan cost over half of a run, and
/// PostgreSQL keeps re-planning when the generic plan's estimate looks worse).
#[tokio::test]
async fn acquisition_reuses_one_plan() {
    #[derive(QueryableByName)]
    struct Plans {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        generic_plans: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        custom_plans: i64,
    }
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    // A queue of a few thousand jobs, as after a pool's cold start: the estimates that
    // decide between the plans come from its statistics.
    seed::job(&mut conn, Transition::Start, true, None).await;
    diesel::sql_query(
        "INSERT INTO provisioner_jobs (organization_id, transition, for_prebuild, input)
         SELECT organization_id, transition, for_prebuild, input
           FROM provisioner_jobs, generate_series(1, 3000)",
    )
    .execute(&mut conn)
    .await
    .expect("queue");
    diesel::sql_query("ANALYZE provisioner_jobs").execute(&mut conn).await.expect("analyze");
    for _ in 0..13 {
        acquire_next_job(&mut conn, "w", now()).await.expect("acquire").expect("a pending job");
    }
    let plans: Plans = diesel::sql_query(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements
          WHERE statement LIKE '%SKIP LOCKED%' AND statement NOT LIKE '%pg_prepared_statements%'",
    )
    .get_result(&mut conn)
    .await
    .expect("the acquisition is a prepared statement of this connection");
    // PostgreSQL plans the first five runs for their values, then keeps the generic plan
    // unless it looks costlier than those.
    assert!(
        plans.generic_plans >= 6 && plans.custom_plans <= 6,
        "generic {} custom {} of 13 runs",
        plans.generic_plans,
        plans.custom_plans
    );
}
