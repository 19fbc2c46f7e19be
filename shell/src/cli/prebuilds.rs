//! `poolkeeper prebuilds pause|resume|status`.

use std::process::ExitCode;

use crate::db::pool::{self, redacted_url, PoolConfig};
use crate::store::settings::{reconciliation_paused, set_reconciliation_paused};

#[derive(Debug, clap::Args)]
pub struct PrebuildsArgs {
    #[arg(long, env = "POOLKEEPER_DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: PrebuildsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PrebuildsCommand {
    /// Stop the reconciler from creating or deleting prebuilds (claims keep working).
    Pause,
    /// Let the reconciler run again.
    Resume,
    /// Print whether the reconciler is paused.
    Status,
}

pub fn prebuilds(args: &PrebuildsArgs) -> ExitCode {
    let Some(url) = args.database_url.as_deref() else {
        eprintln!("error: --database-url or POOLKEEPER_DATABASE_URL is required");
        return ExitCode::from(super::EXIT_INVALID_INPUT);
    };
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(execute(url, &args.command)));
    match result {
        Ok(paused) => {
            println!("prebuild reconciliation: {}", if paused { "paused" } else { "running" });
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#} (database {})", redacted_url(url));
            ExitCode::FAILURE
        }
    }
}

async fn execute(url: &str, command: &PrebuildsCommand) -> anyhow::Result<bool> {
    let pool = pool::build(url, &PoolConfig { max_size: 1, ..PoolConfig::default() })?;
    let mut conn = pool.get().await?;
    match command {
        PrebuildsCommand::Pause => set_reconciliation_paused(&mut conn, true).await?,
        PrebuildsCommand::Resume => set_reconciliation_paused(&mut conn, false).await?,
        PrebuildsCommand::Status => {}
    }
    Ok(reconciliation_paused(&mut conn).await?)
}
