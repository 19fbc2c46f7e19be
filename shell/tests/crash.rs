//! Crash test: the daemon and a provisioner (real binaries) are killed with SIGKILL at random
//! points, 50 times (200 with POOLKEEPER_LONG=1), while presets change under them. At every
//! point no workspace exists without a build; after a final restart every job created is
//! run or canceled (the daemon's reaper fails the jobs of the killed provisioner), and the
//! pool converges to what the presets want within 2 reconciler cycles: the first acts, the
//! second has nothing left to do.
//!
//! POOLKEEPER_CRASH_SEED=<seed> (printed in the summary) repeats a run's random choices (the
//! kill points themselves depend on timing).

mod common;
#[path = "../../tests/support/rng.rs"]
mod rng;
#[path = "../../tests/support/seed.rs"]
mod seed;

use std::time::{Duration, Instant};

use common::{args, free_addr, wait_until, Proc};
use diesel_async::RunQueryDsl;
use poolkeeper::daemon::{CycleOutcome, PrebuildReconciler};
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::store::settings::set_reconciliation_paused;
use poolkeeper_core::prebuilds::ReconcilerConfig;
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
    args(&[
        "run",
        "--database-url",
        url,
        "--listen",
        &free_addr().to_string(),
        "--prebuild-interval",
        "1",
        "--lifecycle-interval",
        "1",
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
    ])
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

/// Runs one reconciler cycle once this replica leads: the stopped daemon's leadership lock
/// goes when PostgreSQL notices its connection closed.
async fn lead_a_cycle(reconciler: &mut PrebuildReconciler) -> CycleOutcome {
    let deadline = Instant::now() + LONG;
    loop {
        match reconciler.cycle(chrono::Utc::now()).await.expect("a cycle") {
            CycleOutcome::NotLeader if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            outcome => return outcome,
        }
    }
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

    let mut daemon: Option<Proc> = None;
    let mut provisioner: Option<Proc> = None;
    let (mut kills, mut daemon_kills, mut provisioner_kills) = (0, 0, 0);
    let mut violations: Vec<String> = Vec::new();
    let mut rolled_out = false;
    while kills < kills_wanted {
        if daemon.is_none() {
            daemon = Some(Proc::spawn("daemon", &daemon_args(db.url())));
        }
        if provisioner.is_none() {
            provisioner = Some(Proc::spawn("provisioner", &provisioner_args(db.url(), rng.next())));
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
        tokio::time::sleep(Duration::from_millis(50 + rng.below(650))).await;
        match rng.below(3) {
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
        set_reconciliation_paused(&mut conn, true).await.expect("pause reconciliation");
    }
    let mut daemon = Proc::spawn("daemon", &daemon_args(db.url()));
    let mut provisioner = Proc::spawn("provisioner", &provisioner_args(db.url(), rng.next()));
    wait_until("every job to end", LONG, || async { count(&db, UNFINISHED_JOBS).await == 0 }).await;
    daemon.signal("TERM");
    let daemon_exit = daemon.wait_exit(LONG).await.and_then(|s| s.code());
    if daemon_exit != Some(0) {
        violations.push(format!("daemon exit {daemon_exit:?}: {}", daemon.log_tail(2000)));
    }
    {
        let mut conn = db.conn().await;
        set_reconciliation_paused(&mut conn, false).await.expect("resume reconciliation");
    }

    // The pool converges within 2 cycles: the first fixes what the kills left (replaces the
    // failed creates, deletes the old version's pool), the second finds nothing to do.
    let config = ReconcilerConfig {
        backoff_interval_secs: 0,
        backoff_lookback_secs: 2,
        failure_hard_limit: 0,
        max_pending_creates_per_preset: 0,
    };
    let mut reconciler = PrebuildReconciler::new(db.pool().clone(), db.url(), config, 2);
    let first = lead_a_cycle(&mut reconciler).await;
    wait_until("the first cycle's jobs to end", LONG, || async {
        count(&db, UNFINISHED_JOBS).await == 0
    })
    .await;
    let first_cycle_jobs = match first {
        CycleOutcome::Ran(stats) => stats.jobs,
        _ => 0,
    };
    let second = lead_a_cycle(&mut reconciler).await;
    match second {
        CycleOutcome::Ran(stats) if stats.jobs == 0 && stats.failures == 0 => {}
        other => violations.push(format!(
            "not converged after 2 cycles: the first {first:?}, the second {other:?}"
        )),
    }
    // Each current preset holds what it wants once the agents are ready; the old version's
    // pools are gone.
    let mut queries: Vec<(String, i64)> = presets
        .iter()
        .map(|(id, desired)| (ready_prebuilds(Some(*id)), i64::from(*desired)))
        .collect();
    let total = presets.iter().map(|(_, desired)| i64::from(*desired)).sum();
    queries.push((ready_prebuilds(None), total));
    let agents_ready = Instant::now() + Duration::from_secs(30);
    for (sql, desired) in &queries {
        let mut ready = count(&db, sql).await;
        while ready != *desired && Instant::now() < agents_ready {
            tokio::time::sleep(Duration::from_millis(50)).await;
            ready = count(&db, sql).await;
        }
        if ready != *desired {
            violations.push(format!("{ready} ready prebuilds, desired {desired}: {sql}"));
        }
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

    println!(
        "reliability crash: seed {seed_value}, kills {kills} (daemon {daemon_kills}, \
         provisioner {provisioner_kills}), jobs {}, reaped {}, unfinished at the last kill \
         {unfinished_at_last_kill}, lost {lost}, jobs of the first cycle after the restart \
         {first_cycle_jobs}, elapsed {:.1}s, violations: {}",
        count(&db, JOBS).await,
        count(&db, REAPED_JOBS).await,
        started.elapsed().as_secs_f64(),
        violations.len()
    );
    assert!(violations.is_empty(), "violations:\n{}", violations.join("\n"));
}
