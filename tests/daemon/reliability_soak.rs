//! Multi-replica soak: three prebuild reconcilers on one database, driven in-process round
//! by round with an explicit clock, while the presets' desired counts and the template's
//! active version change, and a simulated provisioner finishes jobs late and fails 20% of
//! them. Asserted after every cycle: exactly one replica leads; no preset holds more running
//! prebuilds than it wants; a cycle that creates never overshoots (no duplicate create for
//! the same need). Once the churn stops (and the provisioner recovers), every pool converges
//! within 3 cycles. POOLKEEPER_LONG=1 runs ten times more rounds.

use poolkeeper_tests::rng;
use poolkeeper_tests::seed;

use std::collections::HashMap;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use diesel::sql_types::{Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use poolkeeper::daemon::{CycleOutcome, PrebuildReconciler};
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper_core::prebuilds::ReconcilerConfig;
use rng::Rng;
use uuid::Uuid;

const CONFIG: ReconcilerConfig = ReconcilerConfig {
    backoff_interval_secs: 3,
    backoff_lookback_secs: 90,
    failure_hard_limit: 0,
    max_pending_creates_per_preset: 0,
    failed_keep: 3,
    failed_grace_secs: 3600,
};
const REPLICAS: usize = 3;
const ROUND: TimeDelta = TimeDelta::seconds(60);
const QUIET_CYCLES: usize = 3;
/// Advisory locks (leadership) granted in this database.
const LIVE_LEASES: &str = "SELECT count(*) AS n FROM leader_leases
    WHERE loop_name = 'prebuilds' AND expires_at > now()";

#[derive(diesel::QueryableByName)]
struct PresetCounts {
    #[diesel(sql_type = SqlUuid)]
    preset_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    running: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    starting: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    created: i64,
}

/// Per preset: running prebuilds (latest build a succeeded start), starting ones (a start in
/// flight), and first builds ever created.
const COUNTS: &str = "SELECT p.id AS preset_id,
      count(*) FILTER (WHERE l.transition = 'start' AND l.status = 'succeeded' AND NOT w.deleted) AS running,
      count(*) FILTER (WHERE l.transition = 'start' AND l.status IN ('pending', 'running') AND NOT w.deleted) AS starting,
      (SELECT count(*) FROM workspace_builds f WHERE f.preset_id = p.id AND f.build_number = 1) AS created
    FROM presets p
    LEFT JOIN workspace_builds first ON first.preset_id = p.id AND first.build_number = 1
    LEFT JOIN workspaces w ON w.id = first.workspace_id
    LEFT JOIN LATERAL (
        SELECT b.transition, j.status FROM workspace_builds b
          JOIN provisioner_jobs j ON j.id = b.job_id
         WHERE b.workspace_id = w.id ORDER BY b.build_number DESC LIMIT 1) l ON true
    GROUP BY p.id";

async fn counts(conn: &mut AsyncPgConnection) -> HashMap<Uuid, PresetCounts> {
    let rows: Vec<PresetCounts> = diesel::sql_query(COUNTS).load(conn).await.expect("counts");
    rows.into_iter().map(|row| (row.preset_id, row)).collect()
}

#[derive(diesel::QueryableByName)]
struct OpenJob {
    #[diesel(sql_type = SqlUuid)]
    job_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    build_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    workspace_id: Uuid,
    #[diesel(sql_type = Text)]
    transition: String,
    #[diesel(sql_type = Text)]
    status: String,
}

#[derive(Default)]
struct ProvisionerStats {
    succeeded: u64,
    failed: u64,
    canceled: u64,
}

/// The simulated provisioner: each open job finishes this round with probability
/// `finish_percent`; a finishing job fails with probability `fail_percent`.
async fn provision(
    conn: &mut AsyncPgConnection,
    rng: &mut Rng,
    at: DateTime<Utc>,
    finish_percent: u64,
    fail_percent: u64,
    stats: &mut ProvisionerStats,
) {
    let open: Vec<OpenJob> = diesel::sql_query(
        "SELECT j.id AS job_id, b.id AS build_id, b.workspace_id, b.transition::text AS transition,
                j.status::text AS status
           FROM provisioner_jobs j JOIN workspace_builds b ON b.job_id = j.id
          WHERE j.status IN ('pending', 'running', 'canceling')",
    )
    .load(conn)
    .await
    .expect("open jobs");
    for job in open {
        if rng.below(100) >= finish_percent {
            if job.status == "pending" {
                diesel::sql_query(
                    "UPDATE provisioner_jobs SET status = 'running', started_at = $2,
                       heartbeat_at = $2 WHERE id = $1 AND status = 'pending'",
                )
                .bind::<SqlUuid, _>(job.job_id)
                .bind::<Timestamptz, _>(at)
                .execute(conn)
                .await
                .expect("start a job");
            }
            continue;
        }
        let outcome = if job.status == "canceling" {
            stats.canceled += 1;
            "canceled"
        } else if rng.below(100) < fail_percent {
            stats.failed += 1;
            "failed"
        } else {
            stats.succeeded += 1;
            "succeeded"
        };
        if outcome == "succeeded" && job.transition == "start" {
            diesel::sql_query(
                "INSERT INTO workspace_agents (build_id, name, lifecycle_state)
                 VALUES ($1, 'main', 'ready')",
            )
            .bind::<SqlUuid, _>(job.build_id)
            .execute(conn)
            .await
            .expect("agent");
        }
        if outcome == "succeeded" && job.transition == "delete" {
            diesel::sql_query("UPDATE workspaces SET deleted = true WHERE id = $1")
                .bind::<SqlUuid, _>(job.workspace_id)
                .execute(conn)
                .await
                .expect("delete");
        }
        diesel::sql_query(
            "UPDATE provisioner_jobs SET status = $2::text, started_at = coalesce(started_at, $3),
               completed_at = $3, canceled_at = CASE WHEN $2::text = 'canceled' THEN $3 END,
               error = CASE WHEN $2::text = 'failed' THEN 'simulated failure' END
             WHERE id = $1",
        )
        .bind::<SqlUuid, _>(job.job_id)
        .bind::<Text, _>(outcome)
        .bind::<Timestamptz, _>(at)
        .execute(conn)
        .await
        .expect("finish a job");
    }
}

struct Preset {
    id: Uuid,
    name: String,
    desired: i32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_under_churn_never_overshoot_and_converge() {
    let long = std::env::var("POOLKEEPER_LONG").is_ok_and(|v| v == "1");
    let churn_rounds = if long { 300 } else { 30 };
    let seed_value = std::env::var("POOLKEEPER_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) * 0x9e37_79b9 + 7);
    let mut rng = Rng::new(seed_value);

    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template_id, v1) = seed::template(&mut conn, "go").await;
    let mut presets = Vec::new();
    for (name, desired) in [("small", 2), ("medium", 3), ("large", 1)] {
        let id = seed::preset(&mut conn, v1, name, desired).await;
        presets.push(Preset { id, name: name.to_owned(), desired });
    }
    // Presets of earlier versions: inactive, want nothing.
    let mut retired: Vec<Uuid> = Vec::new();
    let mut replicas: Vec<PrebuildReconciler> = (0..REPLICAS)
        .map(|_| PrebuildReconciler::new(db.pool().clone(), db.url(), CONFIG, 2))
        .collect();

    // The explicit clock runs ahead of the real one, so that no timestamp the database
    // writes by itself is in the cycles' future.
    let mut now = Utc::now().duration_trunc(TimeDelta::minutes(1)).expect("truncate");
    let mut violations: Vec<String> = Vec::new();
    let mut stats = ProvisionerStats::default();
    let (mut cycles, mut leader_cycles, mut versions, mut handovers) = (0, 0, 1, 0);
    let mut converged_after = None;
    let mut leader = 0;
    let mut round = 0;
    while round < churn_rounds + QUIET_CYCLES {
        round += 1;
        now += ROUND;
        let churning = round <= churn_rounds;
        if churning {
            if rng.below(3) == 0 {
                let pick = rng.below(presets.len() as u64) as usize;
                let desired = rng.below(6) as i32;
                diesel::sql_query("UPDATE presets SET desired_instances = $1 WHERE id = $2")
                    .bind::<diesel::sql_types::Integer, _>(desired)
                    .bind::<SqlUuid, _>(presets[pick].id)
                    .execute(&mut conn)
                    .await
                    .expect("change desired");
                presets[pick].desired = desired;
            }
            if round % 10 == 5 {
                versions += 1;
                let version = seed::version(&mut conn, template_id, &format!("v{versions}")).await;
                for preset in &mut presets {
                    retired.push(preset.id);
                    preset.id =
                        seed::preset(&mut conn, version, &preset.name, preset.desired).await;
                }
            }
            if round % 7 == 0 {
                // The leading replica restarts: on its way out it hands its lease back (a
                // crashed leader's lease expires instead: tests/daemon_faults.rs).
                let mut old = replicas.remove(leader);
                old.release_leadership().await;
                assert_eq!(seed::count(&mut conn, LIVE_LEASES).await, 0, "lease not released");
                replicas.push(PrebuildReconciler::new(db.pool().clone(), db.url(), CONFIG, 2));
                handovers += 1;
            }
        }

        let before = counts(&mut conn).await;
        let outcomes =
            futures_util::future::join_all(replicas.iter_mut().map(|r| r.cycle(now))).await;
        cycles += outcomes.len();
        let leaders: Vec<usize> = (0..outcomes.len())
            .filter(|i| matches!(outcomes[*i], Ok(CycleOutcome::Ran(_))))
            .collect();
        leader = <[usize]>::first(&leaders).copied().unwrap_or(0);
        leader_cycles += leaders.len();
        if leaders.len() != 1 {
            violations.push(format!("round {round}: {} leaders: {outcomes:?}", leaders.len()));
        }
        for outcome in &outcomes {
            match outcome {
                Ok(CycleOutcome::Ran(s)) if s.failures > 0 => {
                    violations.push(format!("round {round}: preset apply failures {s:?}"))
                }
                Err(err) => violations.push(format!("round {round}: cycle error {err}")),
                _ => {}
            }
        }
        let after = counts(&mut conn).await;
        let wanted = presets
            .iter()
            .map(|p| (p.id, i64::from(p.desired)))
            .chain(retired.iter().map(|id| (*id, 0)));
        for (id, desired) in wanted {
            let (Some(b), Some(a)) = (before.get(&id), after.get(&id)) else {
                violations.push(format!("round {round}: preset {id} missing from the counts"));
                continue;
            };
            if a.running > desired {
                violations.push(format!(
                    "round {round}: preset {id} has {} running prebuilds, desired {desired}",
                    a.running
                ));
            }
            if a.running > desired + a.starting {
                violations.push(format!(
                    "round {round}: preset {id}: running {} > desired {desired} + in flight {}",
                    a.running, a.starting
                ));
            }
            let creates = a.created - b.created;
            if creates > 0 && a.running + a.starting > desired {
                violations.push(format!(
                    "round {round}: preset {id}: {creates} creates overshoot: running {} + \
                     starting {} > desired {desired}",
                    a.running, a.starting
                ));
            }
        }

        // The provisioner: during the churn jobs finish late and 20% fail; afterwards it
        // recovers and finishes everything.
        if churning {
            provision(&mut conn, &mut rng, now, 60, 20, &mut stats).await;
        } else {
            provision(&mut conn, &mut rng, now, 100, 0, &mut stats).await;
            let settled = counts(&mut conn).await;
            let converged = presets
                .iter()
                .map(|p| (p.id, i64::from(p.desired)))
                .chain(retired.iter().map(|id| (*id, 0)))
                .all(|(id, desired)| {
                    settled.get(&id).is_some_and(|c| c.running == desired && c.starting == 0)
                });
            if converged && converged_after.is_none() {
                converged_after = Some(round - churn_rounds);
            }
        }
    }
    if converged_after.is_none() {
        let settled = counts(&mut conn).await;
        for p in &presets {
            let c = &settled[&p.id];
            violations.push(format!(
                "preset {} did not converge within {QUIET_CYCLES} cycles: running {}, starting \
                 {}, desired {}",
                p.name, c.running, c.starting, p.desired
            ));
        }
    }

    assert!(violations.is_empty(), "violations:\n{}", violations.join("\n"));
    println!(
        "reliability soak: seed {seed_value}, rounds {round}, cycles {cycles} (leading \
         {leader_cycles}), replica restarts {handovers}, versions {versions}, jobs succeeded \
         {} failed {} canceled {}, converged after {converged_after:?} quiet cycles, \
         violations: 0",
        stats.succeeded, stats.failed, stats.canceled,
    );
}
