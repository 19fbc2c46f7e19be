//! Crash test: the daemon and a provisioner (real binaries) are killed with SIGKILL at random
//! points, 50 times (200 with POOLKEEPER_LONG=1), while presets change under them. At every
//! point no workspace exists without a build. The kills are shown to interrupt work (jobs
//! running when a provisioner is killed, jobs reaped after). After a final restart every job
//! created is run or canceled (the daemon's reaper fails the jobs of the killed provisioner),
//! and the restarted daemon itself, with its real settings (backoff on), brings the pools to
//! what the presets want within a bounded number of its own cycles, the last of which finds
//! nothing to do. Both processes reach PostgreSQL through fault proxies of their own, and
//! before a third of the kills the proxy of one of them delays or resets its connections, so
//! kills also land on processes that are reconnecting or waiting on a slow path (the
//! proxies' counts prove it).
//!
//! POOLKEEPER_CRASH_SEED=<seed> (printed in the summary) repeats a run's random choices (the
//! kill points themselves depend on timing).

mod common;
#[path = "../../tests/support/fault_proxy.rs"]
mod fault_proxy;
#[path = "../../tests/support/rng.rs"]
mod rng;
#[path = "../../tests/support/seed.rs"]
mod seed;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{args, free_addr, wait_until, Proc};
use diesel_async::RunQueryDsl;
use fault_proxy::{Fault, FaultProxy};
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::store::settings::set_reconciliation_paused;
use rng::Rng;
use uuid::Uuid;

const LONG: Duration = Duration::from_secs(120);

const ORPHAN_WORKSPACES: &str = "SELECT count(*) AS n FROM workspaces w
    WHERE NOT EXISTS (SELECT 1 FROM workspace_builds b WHERE b.workspace_id = w.id)";
const BUILDS_WITHOUT_JOB: &str = "SELECT count(*) AS n FROM workspace_builds b
    LEFT JOIN provisioner_jobs j ON j.id = b.job_id WHERE j.id IS NULL";
const UNFINISHED_JOBS: &str = "SELECT count(*) AS n FROM provisioner_jobs
    WHERE status IN ('pending', 'running', 'canceling')";
/// A job that ended without having been run or canceled: lost.
const LOST_JOBS: &str = "SELECT count(*) AS n FROM provisioner_jobs
    WHERE status NOT IN ('pending', 'running', 'canceling')
      AND started_at IS NULL AND status <> 'canceled'";
const JOBS: &str = "SELECT count(*) AS n FROM provisioner_jobs";
const RUNNING_JOBS: &str = "SELECT count(*) AS n FROM provisioner_jobs WHERE status = 'running'";
const REAPED_JOBS: &str = "SELECT count(*) AS n FROM provisioner_jobs
    WHERE status = 'failed' AND error LIKE '%stopped sending heartbeats%'";

/// Live prebuilds of `preset` (of any preset if `None`) whose latest build is a succeeded
/// start, agents ready.
fn ready_prebuilds(preset: Option<Uuid>) -> String {
    let filter = preset.map(|id| format!("AND b.preset_id = '{id}'")).unwrap_or_default();
    format!(
        "SELECT count(*) AS n FROM workspaces w
         JOIN LATERAL (SELECT * FROM workspace_builds b WHERE b.workspace_id = w.id
                       ORDER BY b.build_number DESC LIMIT 1) b ON true
         JOIN provisioner_jobs j ON j.id = b.job_id
         WHERE w.owner_id = 'c42fdf75-3097-471c-8c33-fb52454d81c0' AND NOT w.deleted
           AND b.transition = 'start' AND j.status = 'succeeded' {filter}
           AND NOT EXISTS (SELECT 1 FROM workspace_agents a
                           WHERE a.build_id = b.id AND a.lifecycle_state <> 'ready')"
    )
}

fn daemon_args(url: &str) -> Vec<String> {
    common::daemon_args(
        url,
        free_addr(),
        "1",
        &[
            "--max-retry-delay",
            "1",
            "--backoff-interval",
            "1",
            "--backoff-lookback",
            "2",
            "--failure-hard-limit",
            "0",
            "--job-heartbeat-timeout",
            "2",
        ],
    )
}

fn provisioner_args(url: &str, seed: u64) -> Vec<String> {
    args(&[
        "provisioner",
        "--database-url",
        url,
        "--poll-interval",
        "200ms",
        "--heartbeat-interval",
        "200ms",
        "--sim-duration",
        "300ms",
        "--sim-seed",
        &seed.to_string(),
    ])
}

/// (jobs, failures) of every prebuild cycle the daemon ran, from its JSON log.
fn cycles(daemon: &Proc) -> Vec<(u64, u64)> {
    daemon
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["fields"]["message"] == "prebuild cycle done")
        .map(|entry| {
            let field = |name: &str| entry["fields"][name].as_u64().unwrap_or(u64::MAX);
            (field("jobs"), field("failures"))
        })
        .collect()
}

async fn set_desired(db: &TestDatabase, preset: Uuid, desired: i32) {
    let mut conn = db.conn().await;
    diesel::sql_query("UPDATE presets SET desired_instances = $1 WHERE id = $2")
        .bind::<diesel::sql_types::Integer, _>(desired)
        .bind::<diesel::sql_types::Uuid, _>(preset)
        .execute(&mut conn)
        .await
        .expect("change the desired count");
}

async fn count(db: &TestDatabase, sql: &str) -> i64 {
    let mut conn = db.conn().await;
    seed::count(&mut conn, sql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_daemons_and_provisioners_lose_no_job_and_the_pool_converges() {
    let started = Instant::now();
    let long = std::env::var("POOLKEEPER_LONG").is_ok_and(|v| v == "1");
    let kills_wanted = if long { 200 } else { 50 };
    let seed_value = std::env::var("POOLKEEPER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) * 0x9e37_79b9 + 1);
    let mut rng = Rng::new(seed_value);

    let db = TestDatabase::new().await;
    let (template_id, v1) = {
        let mut conn = db.conn().await;
        seed::template(&mut conn, "go").await
    };
    let mut presets = Vec::new();
    {
        let mut conn = db.conn().await;
        for (name, desired) in [("small", 3), ("large", 2)] {
            presets.push((seed::preset(&mut conn, v1, name, desired).await, desired));
        }
    }

    // The first daemon leads at once (no lease to wait out) and queues the first pools, so
    // the kills below meet work in progress whatever the seed.
    let daemon_proxy = FaultProxy::for_url(db.url()).await;
    let provisioner_proxy = FaultProxy::for_url(db.url()).await;
    let (daemon_url, provisioner_url) =
        (daemon_proxy.url(db.url()), provisioner_proxy.url(db.url()));
    let mut daemon = Some(Proc::spawn("daemon", &daemon_args(&daemon_url)));
    wait_until("the first pools to be queued", LONG, || async { count(&db, JOBS).await > 0 }).await;
    let mut provisioner: Option<Proc> = None;
    let (mut kills, mut daemon_kills, mut provisioner_kills) = (0, 0, 0);
    let mut running_at_kills = 0;
    let mut provisioner_started = chrono::Utc::now();
    let mut violations: Vec<String> = Vec::new();
    let mut rolled_out = false;
    while kills < kills_wanted {
        if daemon.is_none() {
            daemon = Some(Proc::spawn("daemon", &daemon_args(&daemon_url)));
        }
        if provisioner.is_none() {
            provisioner = Some(Proc::spawn(
                "provisioner",
                &provisioner_args(&provisioner_url, rng.next_u64()),
            ));
            provisioner_started = chrono::Utc::now();
        }
        // Activity: the presets change under the processes.
        if rng.below(2) == 0 {
            let pick = rng.below(presets.len() as u64) as usize;
            let desired = rng.below(5) as i32;
            set_desired(&db, presets[pick].0, desired).await;
            presets[pick].1 = desired;
        }
        if !rolled_out && kills >= kills_wanted / 2 {
            // A new active version: the old pools are deleted (or their pending builds
            // canceled) while the new ones fill, and the kills go on.
            rolled_out = true;
            let mut conn = db.conn().await;
            let v2 = seed::version(&mut conn, template_id, "v2").await;
            for (name, (id, desired)) in ["small", "large"].into_iter().zip(presets.iter_mut()) {
                *id = seed::preset(&mut conn, v2, name, *desired).await;
            }
        }
        // A third of the kills meet a path in trouble: resets (the process reconnects) or
        // a slow link (statements in flight for longer).
        if rng.below(3) == 0 {
            let proxy = if rng.below(2) == 0 { &daemon_proxy } else { &provisioner_proxy };
            proxy.set(if rng.below(2) == 0 {
                Fault::Reset
            } else {
                Fault::Delay(Duration::from_millis(20 + rng.below(100)))
            });
        }
        tokio::time::sleep(Duration::from_millis(50 + rng.below(650))).await;
        let choice = rng.below(3);
        if choice != 0 {
            // The jobs this provisioner took and is running now are cut off by the kill.
            let running =
                format!("{RUNNING_JOBS} AND started_at >= '{}'", provisioner_started.to_rfc3339());
            running_at_kills += count(&db, &running).await;
        }
        match choice {
            0 => {
                daemon.take().expect("daemon").kill9();
                daemon_kills += 1;
            }
            1 => {
                provisioner.take().expect("provisioner").kill9();
                provisioner_kills += 1;
            }
            _ => {
                daemon.take().expect("daemon").kill9();
                provisioner.take().expect("provisioner").kill9();
                daemon_kills += 1;
                provisioner_kills += 1;
            }
        }
        kills += 1;
        daemon_proxy.set(Fault::Pass);
        provisioner_proxy.set(Fault::Pass);
        // At any point: a workspace always comes with its build, a build with its job.
        let orphans = count(&db, ORPHAN_WORKSPACES).await;
        let jobless = count(&db, BUILDS_WITHOUT_JOB).await;
        if orphans + jobless > 0 {
            violations.push(format!(
                "after kill {kills}: {orphans} workspaces without a build, {jobless} builds \
                 without a job"
            ));
        }
    }
    for process in [daemon.take(), provisioner.take()].into_iter().flatten() {
        drop(process);
    }
    let unfinished_at_last_kill = count(&db, UNFINISHED_JOBS).await;

    // Restart with reconciliation paused: the daemon's reaper fails the jobs whose
    // provisioner was killed and the new provisioner runs the pending ones, so every job ends
    // before the reconciler is counted.
    {
        let mut conn = db.conn().await;
        set_reconciliation_paused(&mut conn, true, chrono::Utc::now())
            .await
            .expect("pause reconciliation");
    }
    let mut restart_args = daemon_args(db.url());
    restart_args.extend(args(&["--log-format", "json"]));
    let mut daemon = Proc::spawn("daemon", &restart_args);
    let mut provisioner = Proc::spawn("provisioner", &provisioner_args(db.url(), rng.next_u64()));
    wait_until("every job to end", LONG, || async { count(&db, UNFINISHED_JOBS).await == 0 }).await;
    let reaped = count(&db, REAPED_JOBS).await;

    // The same restarted daemon, with its real settings (backoff on), converges once
    // reconciliation resumes: counted in its own cycles, read from its log (a paused cycle
    // logs no "prebuild cycle done").
    let resumed = Instant::now();
    {
        let mut conn = db.conn().await;
        set_reconciliation_paused(&mut conn, false, chrono::Utc::now())
            .await
            .expect("resume reconciliation");
    }
    let mut queries: Vec<(String, i64)> = presets
        .iter()
        .map(|(id, desired)| (ready_prebuilds(Some(*id)), i64::from(*desired)))
        .collect();
    let total = presets.iter().map(|(_, desired)| i64::from(*desired)).sum();
    queries.push((ready_prebuilds(None), total));
    let converged = || async {
        for (sql, desired) in &queries {
            if count(&db, sql).await != *desired {
                return false;
            }
        }
        count(&db, UNFINISHED_JOBS).await == 0
    };
    wait_until("the pools to reach their desired counts", LONG, converged).await;
    let cycles_to_ready = cycles(&daemon).len();
    // The next cycle must find nothing to do.
    wait_until("a cycle after the pools are ready", LONG, || async {
        cycles(&daemon).len() > cycles_to_ready
    })
    .await;
    let cycle_log = cycles(&daemon);
    let converged_after = resumed.elapsed();
    let quiet = cycle_log[cycles_to_ready];
    if quiet != (0, 0) {
        violations.push(format!(
            "the cycle after the pools were ready still acted: (jobs, failures) {quiet:?}, \
             cycles {cycle_log:?}"
        ));
    }
    let convergence_cycles = cycles_to_ready + 1;
    // The cycles that acted (queued or failed something) until the pools were ready: backoff
    // only holds creates back (quiet cycles), one cycle queues what is missing, and one more
    // may replace a build that failed meanwhile. The quiet cycles in between wait for the
    // builds, whose time is the provisioner's (longer on a loaded machine), not the daemon's.
    let acting = cycle_log[..cycles_to_ready].iter().filter(|cycle| **cycle != (0, 0)).count();
    let cycle_bound = 3;
    if acting > cycle_bound {
        violations.push(format!(
            "{acting} cycles acted before the pools were ready, bound {cycle_bound}: \
             {cycle_log:?}"
        ));
    }
    for (sql, desired) in &queries {
        let ready = count(&db, sql).await;
        if ready != *desired {
            violations.push(format!("{ready} ready prebuilds, desired {desired}: {sql}"));
        }
    }
    daemon.signal("TERM");
    let daemon_exit = daemon.wait_exit(LONG).await.and_then(|s| s.code());
    if daemon_exit != Some(0) {
        violations.push(format!("daemon exit {daemon_exit:?}: {}", daemon.log_tail(2000)));
    }
    provisioner.signal("TERM");
    let provisioner_exit = provisioner.wait_exit(LONG).await.and_then(|s| s.code());
    if provisioner_exit != Some(0) {
        violations
            .push(format!("provisioner exit {provisioner_exit:?}: {}", provisioner.log_tail(2000)));
    }

    let lost = count(&db, LOST_JOBS).await;
    let unfinished = count(&db, UNFINISHED_JOBS).await;
    let orphans = count(&db, ORPHAN_WORKSPACES).await;
    if lost + unfinished + orphans > 0 {
        violations.push(format!(
            "after the restart: {lost} jobs lost, {unfinished} unfinished, {orphans} orphan \
             workspaces"
        ));
    }

    if running_at_kills == 0 {
        violations.push("no provisioner kill interrupted a running job".to_owned());
    }
    if reaped == 0 {
        violations.push("the restarted daemon reaped no job of a killed provisioner".to_owned());
    }
    let (mut resets, mut delayed) = (0, 0);
    for proxy in [&daemon_proxy, &provisioner_proxy] {
        let counts = proxy.counts();
        resets += AtomicU64::load(&counts.resets, Ordering::Relaxed)
            + AtomicU64::load(&counts.refused, Ordering::Relaxed);
        delayed += AtomicU64::load(&counts.delayed_chunks, Ordering::Relaxed);
    }
    if resets == 0 || delayed == 0 {
        violations
            .push(format!("the proxies reached no fault: resets {resets}, delayed {delayed}"));
    }
    assert!(violations.is_empty(), "violations:\n{}", violations.join("\n"));
    println!(
        "reliability crash: seed {seed_value}, kills {kills} (daemon {daemon_kills}, \
         provisioner {provisioner_kills}), jobs {}, running at provisioner kills \
         {running_at_kills}, reaped {reaped}, unfinished at the last kill \
         {unfinished_at_last_kill}, lost {lost}, proxy resets {resets}, delayed chunks \
         {delayed}, converged by the restarted daemon in \
         {convergence_cycles} cycles of which {acting} acted ({:.1}s, bound {cycle_bound} acting \
         cycles), elapsed {:.1}s, \
         violations: 0",
        count(&db, JOBS).await,
        converged_after.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
}
