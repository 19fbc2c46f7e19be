//! Prebuild scenarios: `presets` presets wanting `per_preset` prebuilds each. A cold start
//! (one reconciler cycle on an empty pool), the jobs completed in SQL as a provisioner would,
//! then the steady state: snapshot loads (time and round trips) and no-op cycles.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::Utc;
use poolkeeper::daemon::{CycleOutcome, CycleStats, PrebuildReconciler};
use poolkeeper::db::{DbPool, DEFAULT_ORGANIZATION_ID};
use poolkeeper::store::prebuilds::load_prebuild_snapshot;
use poolkeeper_core::prebuilds::ReconcilerConfig;

use crate::pgbench::References;
use crate::report::{self, median, show, thousands, verdict, Report};
use crate::round_trips::RoundTrips;
use crate::server::{self, Server};
use crate::waits::Sampler;

/// `poolkeeper run`'s defaults.
pub const CONFIG: ReconcilerConfig = ReconcilerConfig {
    backoff_interval_secs: 60,
    backoff_lookback_secs: 3600,
    failure_hard_limit: 3,
    max_pending_creates_per_preset: 0,
    failed_keep: 3,
    failed_grace_secs: 3600,
};
/// `poolkeeper run`'s default pool size, and its parallelism (half of it).
const POOL_SIZE: usize = 10;
const PARALLELISM: usize = POOL_SIZE / 2;
const PRESETS_PER_TEMPLATE: u32 = 100;
/// A cycle with nothing to do reads only the change feed and plans only due presets.
const NO_OP_TARGET: Duration = Duration::from_millis(20);
/// A cycle that reloads and plans everything (the first, and every resync interval).
const FULL_RESYNC_TARGET: Duration = Duration::from_millis(300);
/// The change feed's rows not pruned yet.
const CHANGE_ROWS: &str = "SELECT count(*) AS n FROM prebuild_changes";
/// Creates per second of a cold start: creates are batched across presets.
const COLD_START_TARGET: f64 = 10_000.0;
/// The no-op, resync and cold start targets are stated at this many prebuilds.
const NO_OP_TARGET_AT: u64 = 90_000;

/// A scenario's database after its cold start, left for the claim benchmark.
pub struct Scenario {
    pub name: String,
    pub url: String,
    pub presets: u32,
    pub prebuilds: u64,
}

/// Creates the database, seeds templates and presets, and runs the cold start; returns the
/// scenario and the cold start's (creates, duration).
pub async fn prepare(
    server: &Server,
    presets: u32,
    per_preset: u32,
    profile: bool,
    report: &mut Report,
) -> Result<(Scenario, u64, Duration)> {
    let name = format!("bench_prebuilds_{presets}");
    let url = server.create(&name).await?;
    seed(&url, presets, per_preset).await?;
    let pool = server::pool(&url, POOL_SIZE)?;
    let mut reconciler = PrebuildReconciler::new(pool.clone(), &url, CONFIG, PARALLELISM);
    let sampler = Sampler::maybe(profile, server, &name).await?;
    let started = Instant::now();
    let outcome = reconciler.cycle(Utc::now()).await.context("cold start cycle")?;
    let elapsed = started.elapsed();
    if let Some(sampler) = sampler {
        let summary = sampler.finish().await?;
        report.note(format!("profile, cold start of {presets} presets: {summary}"));
    }
    let stats = ran(outcome)?;
    let expected = u64::from(presets) * u64::from(per_preset);
    if stats.failures > 0 || stats.jobs as u64 != expected {
        bail!("cold start: expected {expected} creates, got {stats:?}");
    }
    complete_all(&url).await?;
    reconciler.release_leadership().await;
    drop(reconciler);
    pool.close();
    Ok((Scenario { name, url, presets, prebuilds: expected }, expected, elapsed))
}

/// Prints the figures of one scenario; the cold start is timed by [`prepare`].
pub async fn measure(
    scenario: &Scenario,
    cold: (u64, Duration),
    proxy: &RoundTrips,
    repeat: usize,
    refs: &References,
    report: &mut Report,
) -> Result<()> {
    let label = format!(
        "{} presets, {} prebuilds",
        thousands(u64::from(scenario.presets)),
        thousands(scenario.prebuilds)
    );
    let (creates, elapsed) = cold;
    let per_sec = creates as f64 / elapsed.as_secs_f64();
    let target = if scenario.prebuilds == NO_OP_TARGET_AT {
        report::rate_verdict(per_sec, COLD_START_TARGET)
    } else {
        "-".to_owned()
    };
    report.row(
        format!("Cold start: creates/s ({label})"),
        format!("{} ({} in {})", report::rate(per_sec), thousands(creates), show(elapsed)),
        target,
        refs.rate_ratio(per_sec, 1),
    );

    // Snapshot load: timed on a direct connection, counted through the proxy.
    let mut conn = server::connect(&scenario.url).await?;
    let loaded = load_prebuild_snapshot(&mut conn, Utc::now(), CONFIG).await?;
    let running = loaded.snapshot.running.len() as u64;
    if running != scenario.prebuilds {
        bail!(
            "steady state: expected {} running prebuilds, the snapshot has {running}",
            scenario.prebuilds
        );
    }
    let mut loads = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let started = Instant::now();
        load_prebuild_snapshot(&mut conn, Utc::now(), CONFIG).await?;
        loads.push(started.elapsed());
    }
    drop(conn);
    let load = median(&mut loads);
    let mut counted = server::connect(&proxy.url(&scenario.name)).await?;
    let before = proxy.now();
    load_prebuild_snapshot(&mut counted, Utc::now(), CONFIG).await?;
    let first = proxy.since(before);
    let before = proxy.now();
    load_prebuild_snapshot(&mut counted, Utc::now(), CONFIG).await?;
    let warm = proxy.since(before);
    drop(counted);
    report.row(
        format!("Snapshot load ({label})"),
        format!("{} median of {repeat}", show(load)),
        "-",
        refs.in_transactions(load),
    );
    report.row(
        format!("Snapshot load round trips ({label})"),
        format!(
            "{} (+{} unawaited statement closes); {} on a new connection",
            warm.waits, warm.closes, first.waits
        ),
        "-",
        "-",
    );

    // The steady state: a cycle with nothing to do, first reloading everything (a resync),
    // then reading only the change feed. Both are timed once the cold start's change rows
    // are pruned: a cycle prunes a batch of them, which would be timed with it.
    let pool = server::pool(&scenario.url, POOL_SIZE)?;
    let mut reconciler = PrebuildReconciler::new(pool.clone(), &scenario.url, CONFIG, PARALLELISM);
    expect_no_op(reconciler.cycle(Utc::now()).await?)?;
    // The change feed's rows of the cold start and its completion are pruned a batch per
    // cycle (their pruning is a figure of its own).
    let mut conn = server::connect(&scenario.url).await?;
    let backlog = server::count(&mut conn, CHANGE_ROWS).await?;
    let started = Instant::now();
    let mut drain_cycles = 0;
    while server::count(&mut conn, CHANGE_ROWS).await? > 0 && drain_cycles < 10_000 {
        expect_no_op(reconciler.cycle(Utc::now()).await?)?;
        drain_cycles += 1;
    }
    let drained = started.elapsed();
    drop(conn);
    report.row(
        format!("Change feed backlog pruned after the cold start ({label})"),
        format!(
            "{} rows in {} ({drain_cycles} cycles)",
            thousands(u64::try_from(backlog).unwrap_or(0)),
            show(drained)
        ),
        "-",
        "-",
    );
    let mut resyncs = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        reconciler.forget();
        let started = Instant::now();
        let outcome = reconciler.cycle(Utc::now()).await?;
        resyncs.push(started.elapsed());
        expect_full(&outcome)?;
        expect_no_op(outcome)?;
    }
    let resync = median(&mut resyncs);
    report.row(
        format!("Full resync cycle ({label})"),
        format!("{} median of {repeat}", show(resync)),
        at_target_size(scenario, resync, FULL_RESYNC_TARGET),
        refs.in_transactions(resync),
    );
    let mut cycles = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let started = Instant::now();
        let outcome = reconciler.cycle(Utc::now()).await?;
        cycles.push(started.elapsed());
        if let CycleOutcome::Ran(stats) = &outcome {
            if stats.full_reload || stats.planned > 0 {
                bail!("a steady-state cycle reloaded or planned: {stats:?}");
            }
        }
        expect_no_op(outcome)?;
    }
    let cycle = median(&mut cycles);
    report.row(
        format!("No-op cycle ({label})"),
        format!("{} median of {repeat}", show(cycle)),
        at_target_size(scenario, cycle, NO_OP_TARGET),
        refs.in_transactions(cycle),
    );
    reconciler.release_leadership().await;
    drop(reconciler);
    pool.close();
    Ok(())
}

/// The verdict against `target` at the size targets are stated at, else "-".
fn at_target_size(scenario: &Scenario, took: Duration, target: Duration) -> String {
    if scenario.prebuilds == NO_OP_TARGET_AT {
        verdict(took, target)
    } else {
        "-".to_owned()
    }
}

fn expect_full(outcome: &CycleOutcome) -> Result<()> {
    match outcome {
        CycleOutcome::Ran(stats) if stats.full_reload => Ok(()),
        other => bail!("the resync cycle did not reload everything: {other:?}"),
    }
}

fn ran(outcome: CycleOutcome) -> Result<CycleStats> {
    match outcome {
        CycleOutcome::Ran(stats) => Ok(stats),
        other => bail!("the reconciler did not run: {other:?}"),
    }
}

fn expect_no_op(outcome: CycleOutcome) -> Result<()> {
    let stats = ran(outcome)?;
    if stats.jobs != 0 || stats.failures != 0 {
        bail!("the steady-state cycle was not a no-op: {stats:?}");
    }
    Ok(())
}

/// Templates of up to 100 presets each, one active simulated version per template.
async fn seed(url: &str, presets: u32, per_preset: u32) -> Result<()> {
    let templates = presets.div_ceil(PRESETS_PER_TEMPLATE);
    let org = DEFAULT_ORGANIZATION_ID;
    server::execute(
        url,
        &format!(
            "BEGIN;
             INSERT INTO templates (id, organization_id, name)
             SELECT md5('template-' || t)::uuid, '{org}', 'template-' || t
             FROM generate_series(1, {templates}) t;
             INSERT INTO template_versions (id, template_id, name, provisioner, source)
             SELECT md5('version-' || t)::uuid, md5('template-' || t)::uuid, 'v1', 'simulated',
                    '{{\"duration_ms\": 0}}'
             FROM generate_series(1, {templates}) t;
             UPDATE templates t SET active_version_id = v.id
             FROM template_versions v WHERE v.template_id = t.id;
             INSERT INTO presets (id, template_version_id, name, desired_instances)
             SELECT md5('preset-' || p)::uuid,
                    md5('version-' || (1 + (p - 1) / {PRESETS_PER_TEMPLATE}))::uuid,
                    'preset-' || p, {per_preset}
             FROM generate_series(1, {presets}) p;
             COMMIT;
             ANALYZE;"
        ),
    )
    .await
}

/// What provisioners would do, in bulk: every pending start job succeeds with one ready agent.
pub async fn complete_all(url: &str) -> Result<()> {
    server::execute(
        url,
        "BEGIN;
         INSERT INTO workspace_agents (build_id, name, lifecycle_state, ready_at)
         SELECT b.id, 'main', 'ready', now()
         FROM workspace_builds b JOIN provisioner_jobs j ON j.id = b.job_id
         WHERE j.status = 'pending' AND b.transition = 'start';
         UPDATE provisioner_jobs SET status = 'succeeded', started_at = now(), completed_at = now()
         WHERE status = 'pending';
         COMMIT;",
    )
    .await?;
    // Autovacuum would have caught up in a steady state; the snapshot's plans assume it.
    server::execute(url, "VACUUM ANALYZE").await
}

/// The claimers' pool on the scenario's database: as many connections as `poolkeeper run`
/// gives its API by default (`--pool-size`), fewer for fewer claimers. Concurrent claimers
/// share it as the API's requests do: more connections than the server has cores to run them
/// only make claims wait for a core in the middle of their transactions.
pub fn claim_pool(scenario: &Scenario, claimers: usize) -> Result<DbPool> {
    server::pool(&scenario.url, claimers.min(poolkeeper::db::pool::DEFAULT_POOL_SIZE))
}
