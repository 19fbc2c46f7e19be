//! `poolkeeper demo`: the whole system on a throw-away local PostgreSQL (or an existing
//! database), with a scripted scenario printed as it happens.

use std::process::ExitCode;

use crate::db::local_server::LocalServer;
use crate::db::migrate;
use crate::demo::{self, DemoConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExitAfter {
    /// Exit (0) once the scripted scenario has completed.
    Scenario,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Run against this PostgreSQL database instead of a throw-away local server (it is
    /// migrated, and the demo's template, user and workspaces are added to it).
    #[arg(long, env = "POOLKEEPER_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Exit after the scripted scenario instead of running until Ctrl-C.
    #[arg(long, env = "POOLKEEPER_DEMO_EXIT_AFTER", value_enum)]
    pub exit_after: Option<ExitAfter>,
    /// Where the HTTP API, health and metrics endpoints listen (port 0 picks a free port;
    /// the address is printed).
    #[arg(long, env = "POOLKEEPER_DEMO_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// Simulated provisioner workers.
    #[arg(long, env = "POOLKEEPER_DEMO_WORKERS", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
}

pub fn demo(args: &DemoArgs) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let mut config = DemoConfig {
        workers: usize::from(args.workers),
        listen: args.listen,
        ..DemoConfig::default()
    };
    // The server (if any) outlives the runtime: every connection is closed before it stops.
    let (server, url) = match &args.database_url {
        Some(url) => {
            // A database that may hold an earlier demo: make this run's names unique.
            config.run_tag = format!("-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
            (None, url.clone())
        }
        None => {
            println!("demo: starting a throw-away PostgreSQL server");
            let server = LocalServer::start()?;
            let url = server.url("postgres");
            println!("demo: PostgreSQL listening on 127.0.0.1:{}", server.port());
            (Some(server), url)
        }
    };
    let applied = migrate::run_pending(&url)?;
    println!("demo: database migrated ({} migrations applied)", applied.len());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let exit_after_scenario = args.exit_after == Some(ExitAfter::Scenario);
    let result = runtime.block_on(demo::run(&url, &config, exit_after_scenario, stop_signal()));
    drop(runtime);
    if let Some(server) = server {
        server.stop()?;
        println!("demo: throw-away PostgreSQL server stopped and removed");
    }
    result
}

/// The first SIGINT or SIGTERM (the demo then stops its server and cleans up).
async fn stop_signal() {
    match super::signals::Signals::register() {
        Ok(mut signals) => {
            signals.next().await;
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for signals");
            std::future::pending::<()>().await;
        }
    }
}
