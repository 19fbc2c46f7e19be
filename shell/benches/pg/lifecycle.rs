//! The lifecycle tick: `workspaces` running workspaces of which `due` have passed their
//! deadline (an autostop each). The tick loads every candidate, plans, and commits the due
//! ones in batches.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::Utc;
use poolkeeper::daemon::LifecycleExecutor;
use poolkeeper::db::DEFAULT_ORGANIZATION_ID;
use poolkeeper::store::lifecycle::{apply_lifecycle_batch, load_lifecycle_snapshot, Applied};

use crate::pgbench::References;
use crate::report::{self, show, thousands, verdict, Report};
use crate::round_trips::RoundTrips;
use crate::server::{self, Server};
use crate::waits::Sampler;

const SEEDED: &str = "bench_lifecycle_seed";
const TIMED: &str = "bench_lifecycle";
const COUNTED: &str = "bench_lifecycle_counted";
/// Issue #23's target at 100,000 workspaces / 10,000 due.
const TICK_TARGET: Duration = Duration::from_secs(2);
const OWNERS: u32 = 1_000;
/// `poolkeeper run`'s default pool size.
const POOL_SIZE: usize = 10;
/// Decisions applied in one batch through the counting proxy (on a copy of the database).
const COUNTED_DECISIONS: usize = 200;

pub async fn measure(
    server: &Server,
    proxy: &RoundTrips,
    (workspaces, due): (u32, u32),
    profile: bool,
    refs: &References,
    report: &mut Report,
) -> Result<()> {
    let seeded = server.create(SEEDED).await?;
    seed(&seeded, workspaces, due).await?;
    let url = server.clone_of(SEEDED, TIMED).await?;
    server.clone_of(SEEDED, COUNTED).await?;
    server.drop_db(SEEDED).await?;
    let label =
        format!("{} workspaces, {} due", thousands(workspaces.into()), thousands(due.into()));

    // The parts of the tick, timed on their own (neither writes anything).
    let mut conn = server::connect(&url).await?;
    load_lifecycle_snapshot(&mut conn, Utc::now()).await?;
    let now = Utc::now();
    let started = Instant::now();
    let snapshot = load_lifecycle_snapshot(&mut conn, now).await?;
    let load = started.elapsed();
    let started = Instant::now();
    let decisions = poolkeeper_core::lifecycle::plan(now, &snapshot);
    let plan = started.elapsed();
    drop(conn);
    let with_effect = decisions.iter().filter(|d| d.has_effect()).count();
    if snapshot.workspaces.len() != workspaces as usize || with_effect != due as usize {
        bail!(
            "lifecycle seed: expected {workspaces} workspaces with {due} due, the snapshot has {} with {with_effect}",
            snapshot.workspaces.len()
        );
    }

    // The tick itself, as the daemon runs it.
    let pool = server::pool(&url, POOL_SIZE)?;
    let mut executor = LifecycleExecutor::new(pool.clone(), &url);
    let sampler = Sampler::maybe(profile, server, TIMED).await?;
    let started = Instant::now();
    let stats = executor.tick(Utc::now()).await?.context("the executor did not lead")?;
    let tick = started.elapsed();
    if let Some(sampler) = sampler {
        report.note(format!("profile, lifecycle tick: {}", sampler.finish().await?));
    }
    drop(executor);
    pool.close();
    if stats.applied != due as usize || stats.failures != 0 {
        bail!("lifecycle tick: expected {due} applied, got {stats:?}");
    }
    let commits_per_sec = stats.applied as f64 / tick.as_secs_f64();
    report.row(
        format!("Lifecycle tick, all committed ({label})"),
        show(tick),
        verdict(tick, TICK_TARGET),
        refs.in_transactions(tick),
    );
    report.row(
        format!("Lifecycle tick: load / plan / apply ({label})"),
        format!("{} / {} / {}", show(load), show(plan), show(tick.saturating_sub(load + plan))),
        "-",
        "-",
    );
    report.row(
        format!("Lifecycle tick: decisions committed/s ({label})"),
        report::rate(commits_per_sec),
        "-",
        refs.rate_ratio(commits_per_sec, 1),
    );

    // Round trips of one applied decision, on the copy (the timed database has none due now).
    let counted = server::pool(&proxy.url(COUNTED), 1)?;
    let mut conn = server::connect(&proxy.url(COUNTED)).await?;
    let now = Utc::now();
    let snapshot = load_lifecycle_snapshot(&mut conn, now).await?;
    let fence = poolkeeper::store::leases::acquire_or_renew(
        &mut conn,
        "lifecycle",
        "bench",
        std::time::Duration::from_secs(600),
    )
    .await?
    .ok_or_else(|| anyhow::anyhow!("the lifecycle lease is held by someone else"))?;
    drop(conn);
    let decisions = poolkeeper_core::lifecycle::plan(now, &snapshot);
    let sample: Vec<_> = decisions
        .iter()
        .filter(|d| d.has_effect())
        .map(|d| d.workspace_id)
        .take(COUNTED_DECISIONS + 1)
        .collect();
    // The first one opens the connection and prepares the statements a batch keeps.
    let (first, batch) = sample.split_at(1.min(sample.len()));
    apply_lifecycle_batch(&counted, &fence, now, first).await?;
    let before = proxy.now();
    let applied = apply_lifecycle_batch(&counted, &fence, now, batch).await?;
    let tally = proxy.since(before);
    counted.close();
    server.drop_db(COUNTED).await?;
    let done = applied.outcomes.iter().filter(|(_, a)| matches!(a, Applied::Done { .. })).count();
    if done != batch.len() {
        bail!("a due decision was not applied: {applied:?}");
    }
    if done > 0 {
        report.row(
            format!("Lifecycle: round trips per batch of {done} decisions"),
            format!(
                "{} (+{} unawaited statement closes), {:.2} per decision",
                tally.waits,
                tally.closes,
                tally.waits as f64 / done as f64
            ),
            "-",
            "-",
        );
    }
    server.drop_db(TIMED).await?;
    Ok(())
}

/// `owners` users, one template, and `workspaces` running workspaces (one succeeded start
/// build with a ready agent each); the first `due` have a deadline ten minutes ago, the
/// others one eight hours ahead.
async fn seed(url: &str, workspaces: u32, due: u32) -> Result<()> {
    let org = DEFAULT_ORGANIZATION_ID;
    server::execute(
        url,
        &format!(
            "BEGIN;
             INSERT INTO users (id, username)
             SELECT md5('user-' || u)::uuid, 'user-' || u FROM generate_series(1, {OWNERS}) u;
             INSERT INTO templates (id, organization_id, name)
             VALUES (md5('lifecycle-template')::uuid, '{org}', 'lifecycle');
             INSERT INTO template_versions (id, template_id, name, provisioner, source)
             VALUES (md5('lifecycle-version')::uuid, md5('lifecycle-template')::uuid, 'v1',
                     'simulated', '{{\"duration_ms\": 0}}');
             UPDATE templates SET active_version_id = md5('lifecycle-version')::uuid;
             INSERT INTO workspaces (id, organization_id, owner_id, template_id, name,
                                     last_used_at, created_at, updated_at)
             SELECT md5('ws-' || g)::uuid, '{org}', md5('user-' || (1 + g % {OWNERS}))::uuid,
                    md5('lifecycle-template')::uuid, 'ws-' || g,
                    now() - interval '1 hour', now() - interval '2 hours', now() - interval '2 hours'
             FROM generate_series(1, {workspaces}) g;
             INSERT INTO provisioner_jobs (id, organization_id, status, created_at, started_at,
                                           completed_at, transition, for_prebuild)
             SELECT md5('job-' || g)::uuid, '{org}', 'succeeded', now() - interval '2 hours',
                    now() - interval '2 hours', now() - interval '2 hours', 'start', false
             FROM generate_series(1, {workspaces}) g;
             INSERT INTO workspace_builds (id, workspace_id, build_number, template_version_id,
                                           transition, reason, initiator_id, job_id, deadline,
                                           created_at)
             SELECT md5('build-' || g)::uuid, md5('ws-' || g)::uuid, 1,
                    md5('lifecycle-version')::uuid, 'start', 'initiator',
                    md5('user-' || (1 + g % {OWNERS}))::uuid, md5('job-' || g)::uuid,
                    CASE WHEN g <= {due} THEN now() - interval '10 minutes'
                         ELSE now() + interval '8 hours' END,
                    now() - interval '2 hours'
             FROM generate_series(1, {workspaces}) g;
             INSERT INTO workspace_agents (build_id, name, lifecycle_state, ready_at)
             SELECT md5('build-' || g)::uuid, 'main', 'ready', now() - interval '2 hours'
             FROM generate_series(1, {workspaces}) g;
             COMMIT;"
        ),
    )
    .await?;
    server::execute(url, "VACUUM ANALYZE").await
}
