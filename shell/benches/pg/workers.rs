//! Provisioner throughput: `jobs` pending prebuild jobs (made by a reconciler cycle), run by
//! `n` workers with the simulated backend taking no time; timed from the start to the last
//! job's completion.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::Utc;
use poolkeeper::daemon::{CycleOutcome, PrebuildReconciler};
use poolkeeper::db::DEFAULT_ORGANIZATION_ID;
use poolkeeper::provisioner::{
    run_worker, Backends, CancellationToken, SimulatedConfig, WorkerConfig,
};

use crate::pgbench::References;
use crate::prebuilds::CONFIG;
use crate::report::{rate, show, thousands, Report};
use crate::server::{self, Server};
use crate::waits::Sampler;

/// Issue #23's target for the simulated jobs: this many completed a second with this many
/// workers.
const TARGET_JOBS_PER_SEC: f64 = 2_000.0;
const TARGET_WORKERS: usize = 4;

const UNFINISHED: &str =
    "SELECT count(*) AS n FROM provisioner_jobs WHERE status IN ('pending', 'running', 'canceling')";
const SUCCEEDED: &str = "SELECT count(*) AS n FROM provisioner_jobs WHERE status = 'succeeded'";
const TIMEOUT: Duration = Duration::from_secs(300);
/// Jobs per preset: one create transaction per preset, kept well under PostgreSQL's limit
/// of 65,535 bind parameters per statement.
const PER_PRESET: u32 = 500;

pub async fn measure(
    server: &Server,
    (workers, jobs): (usize, u32),
    profile: bool,
    refs: &References,
    report: &mut Report,
) -> Result<()> {
    let name = format!("bench_workers_{workers}");
    let url = server.create(&name).await?;
    let org = DEFAULT_ORGANIZATION_ID;
    let presets = jobs.div_ceil(PER_PRESET);
    server::execute(
        &url,
        &format!(
            "BEGIN;
             INSERT INTO templates (id, organization_id, name)
             VALUES (md5('workers-template')::uuid, '{org}', 'workers');
             INSERT INTO template_versions (id, template_id, name, provisioner, source)
             VALUES (md5('workers-version')::uuid, md5('workers-template')::uuid, 'v1',
                     'simulated', '{{\"duration_ms\": 0}}');
             UPDATE templates SET active_version_id = md5('workers-version')::uuid;
             INSERT INTO presets (template_version_id, name, desired_instances)
             SELECT md5('workers-version')::uuid, 'pool-' || p,
                    least({PER_PRESET}, {jobs} - (p - 1) * {PER_PRESET})
             FROM generate_series(1, {presets}) p;
             COMMIT;"
        ),
    )
    .await?;
    let pool = server::pool(&url, 3 * workers + 2)?;
    let mut reconciler = PrebuildReconciler::new(pool.clone(), &url, CONFIG, 1);
    match reconciler.cycle(Utc::now()).await? {
        CycleOutcome::Ran(stats) if stats.jobs == jobs as usize => {}
        other => bail!("workers: expected {jobs} jobs queued, got {other:?}"),
    }
    reconciler.release_leadership().await;
    drop(reconciler);
    server::execute(&url, "ANALYZE").await?;

    let mut monitor = server::connect(&url).await?;
    let shutdown = CancellationToken::new();
    let sampler = Sampler::maybe(profile, server, &name).await?;
    let started = Instant::now();
    let started_at = Utc::now();
    let cpu_before = crate::cpu::used();
    let handles: Vec<_> = (0..workers)
        .map(|i| {
            let config = WorkerConfig {
                tags: Default::default(),
                worker_id: format!("bench-{workers}-{i}"),
                poll_interval: Duration::from_secs(1),
                heartbeat_interval: Duration::from_secs(15),
                backends: Backends {
                    simulated: SimulatedConfig {
                        duration: Duration::ZERO,
                        agent_start: Duration::ZERO,
                        ..SimulatedConfig::default()
                    },
                    ..Backends::default()
                },
            };
            tokio::spawn(run_worker(pool.clone(), config, shutdown.clone()))
        })
        .collect();
    // The count scans the whole queue, so it is run only now and then, and the time is taken
    // from the last completion's instant: polling every 10 ms used to cost the server a
    // tenth of its time, taken from the workers.
    loop {
        if server::count(&mut monitor, UNFINISHED).await? == 0 {
            break;
        }
        if started.elapsed() > TIMEOUT {
            shutdown.cancel();
            bail!("workers: jobs still unfinished after {TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let last_completion_micros = server::count(
        &mut monitor,
        &format!(
            "SELECT (extract(epoch FROM max(completed_at) - '{}'::timestamptz) * 1e6)::bigint AS n
               FROM provisioner_jobs",
            started_at.to_rfc3339()
        ),
    )
    .await?;
    let elapsed = Duration::from_micros(u64::try_from(last_completion_micros).unwrap_or(0));
    let cpu =
        crate::cpu::used().zip(cpu_before).map(|(after, before)| after.saturating_sub(before));
    shutdown.cancel();
    if let Some(sampler) = sampler {
        report.note(format!("profile, {workers} worker(s): {}", sampler.finish().await?));
    }
    for handle in handles {
        handle.await.context("a worker task panicked")?.context("a worker failed")?;
    }
    let succeeded = server::count(&mut monitor, SUCCEEDED).await?;
    drop(monitor);
    pool.close();
    server.drop_db(&name).await?;
    if succeeded != i64::from(jobs) {
        bail!("workers: {succeeded} of {jobs} jobs succeeded");
    }
    let per_sec = f64::from(jobs) / elapsed.as_secs_f64();
    report.row(
        format!(
            "Jobs completed/s, simulated backend, {workers} worker{}",
            if workers == 1 { "" } else { "s" }
        ),
        format!("{} ({} in {})", rate(per_sec), thousands(jobs.into()), show(elapsed)),
        if workers == TARGET_WORKERS {
            crate::report::rate_verdict(per_sec, TARGET_JOBS_PER_SEC)
        } else {
            "-".to_owned()
        },
        refs.rate_ratio(per_sec, workers),
    );
    if let Some(cpu) = cpu {
        report.row(
            format!("Machine CPU per job, {workers} worker{}", if workers == 1 { "" } else { "s" }),
            format!(
                "{:.2} ms ({} of CPU in {}, server and workers)",
                cpu.as_secs_f64() * 1000.0 / f64::from(jobs),
                show(cpu),
                show(elapsed)
            ),
            "-",
            "-",
        );
    }
    Ok(())
}
