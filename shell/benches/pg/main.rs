//! Poolkeeper against a real PostgreSQL: a private server, synthetic state seeded in bulk
//! (set-based multi-row inserts), and the real engines — snapshot loads, reconciler cycles,
//! lifecycle ticks, claims and provisioner workers — timed beside a `pgbench` reference run
//! of plain INSERT transactions on the same server.
//!
//! `cargo bench -p poolkeeper --bench pg` prints every figure (`-- --help` for the options;
//! `-- --quick` for a smoke run). A plain `main`: figures are printed, never asserted.

mod claim;
mod claim_http;
mod claim_seed;
mod cpu;
mod lifecycle;
mod options;
mod pgbench;
mod prebuilds;
mod report;
mod round_trips;
mod server;
mod waits;
mod workers;

use std::time::Instant;

use anyhow::{Context, Result};

use options::{Options, Part};
use report::{show, thousands, Report};

fn main() -> Result<()> {
    let options = Options::parse(std::env::args().skip(1))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    runtime.block_on(run(options))
}

async fn run(options: Options) -> Result<()> {
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("starting a private PostgreSQL ({cores} cores)...");
    let server = server::Server::start().await?;
    let version = server_version(&server).await?;
    let proxy = round_trips::RoundTrips::start(server.local.port()).await?;
    let mut report = Report::default();

    let refs = if options.runs(Part::Pgbench) {
        let mut clients = vec![1];
        clients.extend(options.workers.iter().copied());
        if options.runs(Part::Claim) {
            clients.push(options.claimers);
        }
        clients.sort_unstable();
        clients.dedup();
        eprintln!("pgbench reference runs ({} s each)...", options.pgbench_secs);
        let refs = pgbench::run(&server, &clients, options.pgbench_secs).await?;
        for r in &refs.runs {
            report.row(
                format!(
                    "pgbench reference, {} client{}",
                    r.clients,
                    if r.clients == 1 { "" } else { "s" }
                ),
                format!(
                    "{} TPS; latency mean {} p50 {} p99 {}",
                    thousands(r.tps.round() as u64),
                    show(r.mean),
                    show(r.p50),
                    show(r.p99)
                ),
                "-",
                "1×",
            );
            report.note(format!("reference: `{}`", r.command));
        }
        server.drop_db(pgbench::DATABASE).await?;
        refs
    } else {
        pgbench::References::default()
    };

    let mut largest: Option<prebuilds::Scenario> = None;
    if options.runs(Part::Prebuilds) || options.runs(Part::Claim) {
        let mut sizes = options.presets.clone();
        sizes.sort_unstable();
        if !options.runs(Part::Prebuilds) {
            // The claim benchmark only needs the largest pool.
            sizes.drain(..sizes.len().saturating_sub(1));
        }
        for presets in sizes {
            eprintln!(
                "prebuilds: {} presets x {}...",
                thousands(presets.into()),
                options.per_preset
            );
            let (scenario, creates, elapsed) = prebuilds::prepare(
                &server,
                presets,
                options.per_preset,
                options.profile,
                &mut report,
            )
            .await?;
            if options.runs(Part::Prebuilds) {
                prebuilds::measure(
                    &scenario,
                    (creates, elapsed),
                    &proxy,
                    options.repeat,
                    &refs,
                    &mut report,
                )
                .await?;
            }
            if let Some(previous) = largest.replace(scenario) {
                server.drop_db(&previous.name).await?;
            }
        }
    }
    if let Some(scenario) = largest.take() {
        if options.runs(Part::Claim) {
            eprintln!("claims: {} claimers x {}...", options.claimers, options.claims);
            let sizes = claim::Sizes {
                claimers: options.claimers,
                claims: options.claims,
                history: options.claim_history,
            };
            claim::measure(
                &server,
                &scenario,
                sizes,
                options.profile,
                (&refs, &proxy),
                &mut report,
            )
            .await?;
        }
        server.drop_db(&scenario.name).await?;
    }

    if options.runs(Part::Lifecycle) {
        eprintln!(
            "lifecycle: {} workspaces, {} due...",
            thousands(options.workspaces.into()),
            thousands(options.due.into())
        );
        lifecycle::measure(
            &server,
            &proxy,
            (options.workspaces, options.due),
            options.profile,
            &refs,
            &mut report,
        )
        .await?;
    }

    if options.runs(Part::Workers) {
        for &workers in &options.workers {
            eprintln!("workers: {workers}, {} jobs...", thousands(options.jobs.into()));
            workers::measure(&server, (workers, options.jobs), options.profile, &refs, &mut report)
                .await?;
        }
    }

    report.note(format!(
        "{cores} cores; {version}, private cluster on tmpfs when available, fsync=off, \
         synchronous_commit=off (the same server for pgbench and poolkeeper)"
    ));
    report.note(
        "vs pgbench: rates ÷ pgbench TPS at the same client count; durations as the number of \
         single-client pgbench INSERT transactions that take as long; claim latencies ÷ pgbench \
         latency at the same percentile and client count",
    );
    report.note(format!("whole run: {}", show(started.elapsed())));
    report.print(cores);
    drop(proxy);
    tokio::task::spawn_blocking(move || server.local.stop())
        .await
        .context("the server stop task failed")?
        .context("stop the local PostgreSQL")?;
    Ok(())
}

async fn server_version(server: &server::Server) -> Result<String> {
    #[derive(diesel::QueryableByName)]
    struct Version {
        #[diesel(sql_type = diesel::sql_types::Text)]
        v: String,
    }
    let mut conn = server::connect(&server.local.admin_url()).await?;
    let row: Version = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query("SELECT 'PostgreSQL ' || current_setting('server_version') AS v"),
        &mut conn,
    )
    .await
    .context("read the server version")?;
    Ok(row.v)
}
