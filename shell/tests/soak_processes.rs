//! Soak with real processes: three `poolkeeper run` replicas and two `poolkeeper provisioner`
//! workers (simulated backend, 20% of builds failing), backoff and the hard limit on, each
//! process reaching PostgreSQL through a fault proxy of its own that injects latency,
//! connection resets and short freezes, while pools grow. At every sample no preset has more
//! live prebuilds
//! (ready, or a start in flight) than it wants: a create beyond the need, as two leaders at
//! once would make, shows there, and the prebuild lease only moves forward (a token is never
//! held by two replicas, never goes back). Then the leader's path freezes for longer than its
//! lease: another replica takes over (measured), a new template version rolls out under the
//! new leader, and the frozen replica, thawed, writes nothing beyond the need (fenced). Once
//! the faults stop the pools converge. The proxies' counts prove each kind of fault was
//! reached.
//!
//! POOLKEEPER_LONG=1 runs ten times as many fault rounds; POOLKEEPER_SOAK_SEED repeats a run's
//! random choices (the seed is in the summary line).

mod common;
#[path = "../../tests/support/fault_proxy.rs"]
mod fault_proxy;
#[path = "../../tests/support/rng.rs"]
mod rng;
#[path = "../../tests/support/seed.rs"]
mod seed;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{args, free_addr, wait_until, Proc};
use fault_proxy::{Fault, FaultProxy};
use poolkeeper::db::test_db::TestDatabase;
use rng::Rng;
use uuid::Uuid;

const LONG: Duration = Duration::from_secs(120);
const ROUND: Duration = Duration::from_millis(1500);

const UNFINISHED_JOBS: &str = "SELECT count(*) AS n FROM provisioner_jobs
    WHERE status IN ('pending', 'running', 'canceling')";
const JOBS: &str = "SELECT count(*) AS n FROM provisioner_jobs";
const FAILED_JOBS: &str = "SELECT count(*) AS n FROM provisioner_jobs WHERE status = 'failed'";
const LEASE_TOKENS: &str =
    "SELECT COALESCE(sum(token), 0)::bigint AS n FROM leader_leases WHERE loop_name = 'prebuilds'";

/// Live prebuilds of `preset` whose latest build is a start that has not failed (in flight or
/// succeeded): never more than desired, or a create went beyond the need.
fn live_starts(preset: Uuid) -> String {
    format!(
        "SELECT count(*) AS n FROM workspaces w
         JOIN LATERAL (SELECT * FROM workspace_builds b WHERE b.workspace_id = w.id
                       ORDER BY b.build_number DESC LIMIT 1) b ON true
         JOIN provisioner_jobs j ON j.id = b.job_id
         WHERE w.owner_id = 'c42fdf75-3097-471c-8c33-fb52454d81c0' AND NOT w.deleted
           AND b.preset_id = '{preset}' AND b.transition = 'start'
           AND j.status IN ('pending', 'running', 'succeeded')"
    )
}

/// Live prebuilds of `preset` ready to be claimed.
fn ready(preset: Uuid) -> String {
    format!(
        "{} AND j.status = 'succeeded' AND NOT EXISTS (SELECT 1 FROM workspace_agents a
           WHERE a.build_id = b.id AND a.lifecycle_state <> 'ready')",
        live_starts(preset)
    )
}

fn replica_args(url: &str) -> Vec<String> {
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
            "5",
            "--failure-hard-limit",
            "8",
            "--job-heartbeat-timeout",
            "5",
            "--pool-size",
            "4",
        ],
    )
}

fn worker_args(url: &str, seed: u64) -> Vec<String> {
    args(&[
        "provisioner",
        "--database-url",
        url,
        "--poll-interval",
        "200ms",
        "--heartbeat-interval",
        "300ms",
        "--sim-duration",
        "300ms",
        "--sim-failure-rate",
        "0.2",
        "--sim-seed",
        &seed.to_string(),
    ])
}

async fn count(db: &TestDatabase, sql: &str) -> i64 {
    let mut conn = db.conn().await;
    seed::count(&mut conn, sql).await
}

/// The prebuild lease: (holder, token), if anyone ever held it.
async fn prebuild_lease(db: &TestDatabase) -> Option<(String, i64)> {
    #[derive(diesel::QueryableByName)]
    struct Lease {
        #[diesel(sql_type = diesel::sql_types::Text)]
        holder: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        token: i64,
    }
    use diesel_async::RunQueryDsl;
    let mut conn = db.conn().await;
    let lease: Option<Lease> =
        diesel::sql_query("SELECT holder, token FROM leader_leases WHERE loop_name = 'prebuilds'")
            .get_result(&mut conn)
            .await
            .ok();
    lease.map(|l| (l.holder, l.token))
}

/// What the samples have seen: overshoots and lease moves.
#[derive(Default)]
struct Watch {
    violations: Vec<String>,
    samples: u64,
    holders_by_token: HashMap<i64, String>,
    highest_token: i64,
}

impl Watch {
    /// One sample: no preset above its desired count, the lease only moves forward.
    async fn sample(&mut self, db: &TestDatabase, presets: &[(Uuid, i32)], when: &str) {
        for (preset, desired) in presets {
            let live = count(db, &live_starts(*preset)).await;
            if live > i64::from(*desired) {
                self.violations.push(format!(
                    "{when}: preset {preset} has {live} live prebuilds, desired {desired}"
                ));
            }
        }
        if let Some((holder, token)) = prebuild_lease(db).await {
            if token < self.highest_token {
                self.violations.push(format!(
                    "{when}: lease token went back from {} to {token}",
                    self.highest_token
                ));
            }
            self.highest_token = self.highest_token.max(token);
            let first = self.holders_by_token.entry(token).or_insert_with(|| holder.clone());
            if *first != holder {
                self.violations
                    .push(format!("{when}: lease token {token} held by {first} and by {holder}"));
            }
        }
        self.samples += 1;
    }
}

/// The pid at the start of a lease holder's name (`<pid>-<random>`).
fn holder_pid(holder: &str) -> Option<u32> {
    holder.split('-').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_and_workers_through_network_faults_never_overshoot_and_converge() {
    let started = Instant::now();
    let long = std::env::var("POOLKEEPER_LONG").is_ok_and(|v| v == "1");
    let rounds = if long { 200 } else { 20 };
    let seed_value = std::env::var("POOLKEEPER_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) * 0x2545_f491 + 7);
    let mut rng = Rng::new(seed_value);

    let db = TestDatabase::new().await;
    let mut presets = Vec::new();
    {
        let mut conn = db.conn().await;
        let (_, version) = seed::template(&mut conn, "go").await;
        for (name, desired) in [("small", 3), ("large", 2)] {
            presets.push((seed::preset(&mut conn, version, name, desired).await, desired));
        }
    }

    let mut proxies = Vec::new();
    let mut processes = Vec::new();
    for i in 0..5 {
        let proxy = FaultProxy::for_url(db.url()).await;
        let url = proxy.url(db.url());
        processes.push(if i < 3 {
            Proc::spawn(&format!("replica-{i}"), &replica_args(&url))
        } else {
            Proc::spawn(&format!("worker-{i}"), &worker_args(&url, rng.next_u64()))
        });
        proxies.push(proxy);
    }

    // Fault rounds: each round one process's path gets a fault, the others pass.
    let mut watch = Watch::default();
    for round in 0..rounds {
        for proxy in &proxies {
            proxy.set(Fault::Pass);
        }
        let victim = rng.below(proxies.len() as u64) as usize;
        let fault = match rng.below(3) {
            0 => Fault::Delay(Duration::from_millis(20 + rng.below(80))),
            1 => Fault::Reset,
            _ => Fault::Freeze,
        };
        proxies[victim].set(fault);
        // Work under the faults: a pool grows now and then (only grows, so that a sample
        // above the desired count can only be a create beyond the need).
        if rng.below(3) == 0 {
            let pick = rng.below(presets.len() as u64) as usize;
            if presets[pick].1 < 6 {
                presets[pick].1 += 1;
                use diesel_async::RunQueryDsl;
                let mut conn = db.conn().await;
                diesel::sql_query("UPDATE presets SET desired_instances = $1 WHERE id = $2")
                    .bind::<diesel::sql_types::Integer, _>(presets[pick].1)
                    .bind::<diesel::sql_types::Uuid, _>(presets[pick].0)
                    .execute(&mut conn)
                    .await
                    .expect("grow a pool");
            }
        }
        let round_end = Instant::now() + ROUND;
        let when = format!("round {round} ({fault:?} on {})", processes[victim].name);
        while Instant::now() < round_end {
            watch.sample(&db, &presets, &when).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for proxy in &proxies {
        proxy.set(Fault::Pass);
    }

    // Takeover: the leader's path freezes for longer than its lease. Another replica must
    // take the lease (its token moves on) and a rollout goes on under it.
    wait_until("a replica to lead the prebuild loop", LONG, || async {
        prebuild_lease(&db).await.is_some()
    })
    .await;
    let (old_holder, old_token) = prebuild_lease(&db).await.expect("a lease");
    let leader = processes[..3]
        .iter()
        .position(|p| Some(p.pid()) == holder_pid(&old_holder))
        .expect("the lease holder is one of the replicas");
    proxies[leader].set(Fault::Freeze);
    let frozen_at = Instant::now();
    let mut takeover = None;
    while frozen_at.elapsed() < LONG {
        watch.sample(&db, &presets, "leader frozen").await;
        if let Some((holder, token)) = prebuild_lease(&db).await {
            if holder != old_holder && token > old_token {
                takeover = Some(frozen_at.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let takeover = takeover.expect("another replica took the lease within the cap");
    let old_presets = presets.clone();
    {
        let mut conn = db.conn().await;
        let template_id = {
            use diesel::prelude::*;
            use diesel_async::RunQueryDsl;
            use poolkeeper::db::schema::templates;
            templates::table.select(templates::id).first::<Uuid>(&mut conn).await.expect("template")
        };
        let v2 = seed::version(&mut conn, template_id, "v2").await;
        for ((id, desired), name) in presets.iter_mut().zip(["small", "large"]) {
            *id = seed::preset(&mut conn, v2, name, *desired).await;
        }
    }
    // The old leader stays frozen a little into the rollout, then thaws: its writes are
    // fenced, so the samples see no create beyond the need.
    let thaw_at = Instant::now() + Duration::from_secs(3);
    let both = [presets.clone(), old_presets.clone()].concat();
    while Instant::now() < thaw_at {
        watch.sample(&db, &both, "rollout, old leader frozen").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxies[leader].set(Fault::Pass);
    let fault_ended = Instant::now();
    let mut violations = std::mem::take(&mut watch.violations);
    for process in &mut processes {
        if let Some(status) = process.exited() {
            violations.push(format!(
                "{} exited {status:?}: {}",
                process.name,
                process.log_tail(2000)
            ));
        }
    }

    // Convergence once the faults stop: every pool of the new version full of ready
    // prebuilds, the old version's drained, every job ended.
    wait_until("the pools to converge after the faults", LONG, || async {
        for (preset, desired) in &presets {
            if count(&db, &ready(*preset)).await != i64::from(*desired) {
                return false;
            }
        }
        for (preset, _) in &old_presets {
            if count(&db, &live_starts(*preset)).await != 0 {
                return false;
            }
        }
        count(&db, UNFINISHED_JOBS).await == 0
    })
    .await;
    let converged_after = fault_ended.elapsed();
    for (preset, desired) in &presets {
        let live = count(&db, &live_starts(*preset)).await;
        if live != i64::from(*desired) {
            violations.push(format!("after convergence: preset {preset} {live}/{desired}"));
        }
    }
    let (mut resets, mut frozen, mut delayed, mut connections) = (0, 0, 0, 0);
    for proxy in &proxies {
        let counts = proxy.counts();
        resets += counts.resets.load(Ordering::Relaxed);
        frozen += counts.frozen_chunks.load(Ordering::Relaxed);
        delayed += counts.delayed_chunks.load(Ordering::Relaxed);
        connections += counts.connections.load(Ordering::Relaxed);
    }
    let jobs = count(&db, JOBS).await;
    let failed = count(&db, FAILED_JOBS).await;
    let lease_tokens = count(&db, LEASE_TOKENS).await;
    for process in &mut processes {
        // One that already ended is reported below, with its log; kill(1) would only fail.
        if process.exited().is_none() {
            process.signal("TERM");
        }
    }
    for process in &mut processes {
        let exit = process.wait_exit(LONG).await.and_then(|s| s.code());
        if exit != Some(0) {
            violations.push(format!("{} exit {exit:?}: {}", process.name, process.log_tail(2000)));
        }
    }

    assert!(violations.is_empty(), "violations:\n{}", violations.join("\n"));
    // The faults were reached: every kind did something to real traffic.
    assert!(
        resets > 0 && frozen > 0 && delayed > 0,
        "resets {resets}, frozen {frozen}, delayed {delayed}"
    );
    assert!(failed > 0, "no build failed: backoff was never exercised");
    println!(
        "reliability soak (processes): seed {seed_value}, rounds {rounds}, samples {}, \
         replicas 3, workers 2, proxy connections {connections}, resets {resets}, frozen chunks \
         {frozen}, delayed chunks {delayed}, jobs {jobs} (failed {failed}), desired at the end \
         {:?}, prebuilds lease token {lease_tokens} ({} holders seen), leader frozen: taken \
         over after {:.1}s, rollout under the new leader, converged {:.1}s after the faults, \
         elapsed {:.1}s, violations: 0",
        watch.samples,
        presets.iter().map(|(_, desired)| *desired).collect::<Vec<_>>(),
        watch.holders_by_token.len(),
        takeover.as_secs_f64(),
        converged_after.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
