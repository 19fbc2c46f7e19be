//! The provisioner under load (issue 16, "done when"): four real workers, a pool fill of 500
//! prebuilds announced in batches, people's workspaces created throughout, and the reaper
//! running beside them with a tight heartbeat timeout. No job may be reaped while its worker
//! is alive (all four live through the run) and no succeeded build may lack its state.
//!
//! By default a short run (fast builds, well under a minute); `POOLKEEPER_LONG=1` runs the
//! ten-minute version of the scenario (seconds-long builds, a 5 s heartbeat, a 20 s timeout).

use poolkeeper_tests::provisioner_seed as seed;
use poolkeeper_tests::seed as store_seed;

use std::time::{Duration, Instant};

use chrono::Utc;
use diesel::sql_types::{BigInt, Integer, Text, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use poolkeeper::db::enums::Transition;
use poolkeeper::db::pool::{self, PoolConfig};
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::db::{DEFAULT_ORGANIZATION_ID, PREBUILDS_USER_ID};
use poolkeeper::provisioner::{
    reap_stale_jobs, run_worker, Backends, CancellationToken, ReaperConfig, SimulatedConfig,
    TerraformConfig, WorkerConfig,
};
use seed::TemplateSpec;
use uuid::Uuid;

struct Scenario {
    prebuilds: i64,
    batch: i64,
    prebuild_build: Duration,
    person_build: Duration,
    /// Every `slow_every`-th person's build takes `slow_build`, longer than the heartbeat
    /// timeout: only its heartbeats keep it from being reaped.
    slow_every: u32,
    slow_build: Duration,
    /// A person's workspace is created this often while the fill runs.
    person_every: Duration,
    /// People keep creating workspaces at least this long.
    min_run: Duration,
    heartbeat: Duration,
    heartbeat_timeout: Duration,
    reap_every: Duration,
    drain_timeout: Duration,
}

impl Scenario {
    fn from_env() -> (Self, &'static str) {
        if std::env::var("POOLKEEPER_LONG").is_ok_and(|v| v == "1") {
            let long = Self {
                prebuilds: 500,
                batch: 25,
                prebuild_build: Duration::from_millis(1500),
                person_build: Duration::from_secs(1),
                slow_every: 10,
                slow_build: Duration::from_secs(45),
                person_every: Duration::from_secs(2),
                min_run: Duration::from_secs(600),
                heartbeat: Duration::from_secs(5),
                heartbeat_timeout: Duration::from_secs(20),
                reap_every: Duration::from_secs(1),
                drain_timeout: Duration::from_secs(900),
            };
            (long, "long")
        } else {
            let short = Self {
                prebuilds: 500,
                batch: 25,
                prebuild_build: Duration::from_millis(40),
                person_build: Duration::from_millis(40),
                slow_every: 5,
                slow_build: Duration::from_millis(2500),
                person_every: Duration::from_millis(150),
                min_run: Duration::from_secs(8),
                heartbeat: Duration::from_millis(400),
                heartbeat_timeout: Duration::from_millis(1500),
                reap_every: Duration::from_millis(250),
                drain_timeout: Duration::from_secs(50),
            };
            (short, "short")
        }
    }
}

/// `count` prebuilds of `preset`, each a workspace with a pending start build, in one
/// statement (each job is announced at commit, as the reconciler's are).
const FILL_SQL: &str = "
WITH ids AS (SELECT gen_random_uuid() AS ws, gen_random_uuid() AS job, g
               FROM generate_series(1, $1) AS g),
     w AS (INSERT INTO workspaces (id, organization_id, owner_id, template_id, name)
           SELECT ws, $2, $3, $4, 'pb-' || $5 || '-' || g FROM ids),
     j AS (INSERT INTO provisioner_jobs (id, organization_id, for_prebuild, transition)
           SELECT job, $2, true, 'start' FROM ids)
INSERT INTO workspace_builds (workspace_id, build_number, template_version_id, preset_id,
                              transition, reason, initiator_id, job_id)
SELECT ws, 1, $6, $7, 'start', 'prebuild', $3, job FROM ids";

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(conn: &mut AsyncPgConnection, sql: &str) -> i64 {
    let row: Count = diesel::sql_query(sql).get_result(conn).await.expect(sql);
    row.n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_fill_a_pool_without_reaping_a_live_job() {
    let (scenario, mode) = Scenario::from_env();
    let started = Instant::now();
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template, version) = store_seed::template(&mut conn, "pool").await;
    diesel::sql_query("UPDATE template_versions SET source = $1::jsonb WHERE id = $2")
        .bind::<Text, _>(
            serde_json::json!({
                "duration_ms": scenario.prebuild_build.as_millis() as u64,
                "resources": ["home"],
            })
            .to_string(),
        )
        .bind::<SqlUuid, _>(version)
        .execute(&mut conn)
        .await
        .expect("prebuild duration");
    let preset = store_seed::preset(&mut conn, version, "p", 500).await;
    let person_spec = TemplateSpec {
        source: serde_json::json!({
            "duration_ms": scenario.person_build.as_millis() as u64,
            "resources": ["vm"],
        }),
        ..TemplateSpec::default()
    };
    let (person_template, person_version) = seed::template(&mut conn, "people", person_spec).await;
    let slow_spec = TemplateSpec {
        source: serde_json::json!({
            "duration_ms": scenario.slow_build.as_millis() as u64,
            "resources": ["vm"],
        }),
        ..TemplateSpec::default()
    };
    let (slow_template, slow_version) = seed::template(&mut conn, "slow", slow_spec).await;
    let person = seed::user(&mut conn, "pat", None).await;
    let work_dir = std::env::temp_dir().join(format!("poolkeeper-load-{}", Uuid::new_v4()));

    let shutdown = CancellationToken::new();
    let mut workers = Vec::new();
    for n in 0..4 {
        let pool = pool::build(
            db.url(),
            &PoolConfig {
                max_size: 3,
                connect_timeout: Duration::from_secs(10),
                ..PoolConfig::default()
            },
        )
        .expect("worker pool");
        let config = WorkerConfig {
            tags: Default::default(),
            worker_id: format!("load-{n}"),
            poll_interval: Duration::from_secs(2),
            heartbeat_interval: scenario.heartbeat,
            backends: Backends {
                simulated: SimulatedConfig::default(),
                terraform: TerraformConfig {
                    bin: "terraform".to_owned(),
                    work_dir: work_dir.join(format!("w{n}")),
                },
            },
        };
        workers.push(tokio::spawn(run_worker(pool, config, shutdown.clone())));
    }
    let reaping = {
        let pool = db.pool().clone();
        let stop = shutdown.clone();
        let config = ReaperConfig {
            heartbeat_timeout: scenario.heartbeat_timeout,
            // The daemon's default: prebuilds queue behind people's jobs far shorter than this.
            pending_timeout: Duration::from_secs(1800),
        };
        let every = scenario.reap_every;
        tokio::spawn(async move {
            let mut reaped = 0;
            while !stop.is_cancelled() {
                reaped += reap_stale_jobs(&pool, Utc::now(), &config).await.expect("reap");
                tokio::time::sleep(every).await;
            }
            reaped
        })
    };

    // The fill, in batches, while people create workspaces throughout.
    let mut filled = 0;
    let mut people = 0;
    let mut batch_number = 0;
    let mut next_person = Instant::now();
    let fill_every = scenario.min_run.min(Duration::from_secs(60))
        / u32::try_from((scenario.prebuilds / scenario.batch).max(1)).unwrap_or(1);
    let mut next_batch = Instant::now();
    while filled < scenario.prebuilds || started.elapsed() < scenario.min_run {
        let now = Instant::now();
        if filled < scenario.prebuilds && now >= next_batch {
            batch_number += 1;
            let n = scenario.batch.min(scenario.prebuilds - filled);
            diesel::sql_query(FILL_SQL)
                .bind::<Integer, _>(i32::try_from(n).expect("batch size"))
                .bind::<SqlUuid, _>(DEFAULT_ORGANIZATION_ID)
                .bind::<SqlUuid, _>(PREBUILDS_USER_ID)
                .bind::<SqlUuid, _>(template)
                .bind::<Text, _>(batch_number.to_string())
                .bind::<SqlUuid, _>(version)
                .bind::<SqlUuid, _>(preset)
                .execute(&mut conn)
                .await
                .expect("fill");
            filled += n;
            next_batch = now + fill_every;
        }
        if now >= next_person {
            people += 1;
            let (template, version) = if people % i64::from(scenario.slow_every) == 0 {
                (slow_template, slow_version)
            } else {
                (person_template, person_version)
            };
            let name = format!("dev-{people}");
            let ws = seed::workspace(&mut conn, person, template, &name, 0, None).await;
            seed::build(&mut conn, ws, version, person, 1, Transition::Start, None).await;
            next_person = now + scenario.person_every;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the queue drain.
    let drain_deadline = Instant::now() + scenario.drain_timeout;
    loop {
        let open = count(
            &mut conn,
            "SELECT count(*) AS n FROM provisioner_jobs WHERE status IN ('pending', 'running')",
        )
        .await;
        if open == 0 {
            break;
        }
        assert!(Instant::now() < drain_deadline, "{open} jobs still open after the run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    let reaped = reaping.await.expect("reaper task");
    for worker in workers {
        let ended = tokio::time::timeout(Duration::from_secs(30), worker).await;
        assert!(matches!(ended, Ok(Ok(Ok(())))), "a worker did not stop cleanly: {ended:?}");
    }

    let jobs = count(&mut conn, "SELECT count(*) AS n FROM provisioner_jobs").await;
    let succeeded =
        count(&mut conn, "SELECT count(*) AS n FROM provisioner_jobs WHERE status = 'succeeded'")
            .await;
    // Every worker lived through the whole run: any job the reaper failed was alive.
    let reaped_alive = count(
        &mut conn,
        "SELECT count(*) AS n FROM provisioner_jobs WHERE status = 'failed'
            AND error LIKE '%heartbeat%'",
    )
    .await;
    let without_state = count(
        &mut conn,
        "SELECT count(*) AS n FROM workspace_builds b JOIN provisioner_jobs j ON j.id = b.job_id
          WHERE j.status = 'succeeded' AND b.provisioner_state IS NULL",
    )
    .await;
    let expected = scenario.prebuilds + people;
    assert_eq!(jobs, expected);
    assert_eq!(reaped, 0, "the reaper failed {reaped} jobs");
    assert_eq!(reaped_alive, 0, "jobs reaped while their worker was alive");
    assert_eq!(without_state, 0, "succeeded builds without state");
    assert_eq!(succeeded, expected, "not every job succeeded");
    eprintln!(
        "summary ({mode}): {} s, 4 workers, {} prebuilds + {people} people's workspaces, \
         {succeeded} jobs succeeded, reaped while their worker was alive: {reaped_alive}, \
         reaped in all: {reaped}, builds without state: {without_state}, violations: 0",
        started.elapsed().as_secs(),
        scenario.prebuilds,
    );
    let _ = std::fs::remove_dir_all(work_dir);
}
