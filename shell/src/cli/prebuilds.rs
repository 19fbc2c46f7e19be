//! `poolkeeper prebuilds pause|resume|status`.

use std::process::ExitCode;

use serde::Serialize;

use super::output::{self, or_dash, Column, Format, OutputArgs};
use crate::db::pool::{self, redacted_url, PoolConfig};
use crate::store::pools::{pool_status, PresetPoolStatus};
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
    /// Whether the reconciler is paused, and every pool: desired, live, ready (claimable),
    /// starting and expired prebuilds, as the core counts them.
    Status(OutputArgs),
}

/// One pool as `-o json` prints it: the pool and the reconciler's switch.
#[derive(Serialize)]
struct PoolLine {
    #[serde(flatten)]
    pool: PresetPoolStatus,
    reconciliation_paused: bool,
}

const COLUMNS: &[Column<PoolLine>] = &[
    ("TEMPLATE", |l| l.pool.template.clone()),
    ("PRESET", |l| l.pool.preset.clone()),
    ("DESIRED", |l| l.pool.desired.to_string()),
    ("LIVE", |l| l.pool.instances.to_string()),
    ("READY", |l| l.pool.ready.to_string()),
    ("STARTING", |l| l.pool.starting.to_string()),
    ("EXPIRED", |l| l.pool.expired.to_string()),
    ("STATUS", |l| l.pool.prebuild_status.clone()),
    ("LAST ERROR", |l| or_dash(l.pool.last_error.as_deref())),
];

pub fn prebuilds(args: &PrebuildsArgs) -> ExitCode {
    let url = match super::database_url(args.database_url.as_deref()) {
        Ok(url) => url,
        Err(code) => return code,
    };
    let result = super::block_on(execute(url, &args.command))
        .map_err(anyhow::Error::from)
        .and_then(|inner| inner);
    match result {
        Ok((paused, pools)) => {
            let state = if paused { "paused" } else { "running" };
            match &args.command {
                PrebuildsCommand::Status(out) => {
                    let lines: Vec<PoolLine> = pools
                        .into_iter()
                        .map(|pool| PoolLine { pool, reconciliation_paused: paused })
                        .collect();
                    if out.format() == Format::Table {
                        println!("prebuild reconciliation: {state}");
                    }
                    output::print(out, &lines, COLUMNS);
                }
                PrebuildsCommand::Pause | PrebuildsCommand::Resume => {
                    println!("prebuild reconciliation: {state}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#} (database {})", redacted_url(url));
            ExitCode::FAILURE
        }
    }
}

/// The switch after the command, and for `status` every pool.
async fn execute(
    url: &str,
    command: &PrebuildsCommand,
) -> anyhow::Result<(bool, Vec<PresetPoolStatus>)> {
    let pool = pool::build(url, &PoolConfig { max_size: 1, ..PoolConfig::default() })?;
    let pools = match command {
        PrebuildsCommand::Status(_) => pool_status(&pool, chrono::Utc::now()).await?,
        PrebuildsCommand::Pause | PrebuildsCommand::Resume => Vec::new(),
    };
    let mut conn = pool.get().await?;
    match command {
        PrebuildsCommand::Pause => {
            set_reconciliation_paused(&mut conn, true, chrono::Utc::now()).await?
        }
        PrebuildsCommand::Resume => {
            set_reconciliation_paused(&mut conn, false, chrono::Utc::now()).await?
        }
        PrebuildsCommand::Status(_) => {}
    }
    Ok((reconciliation_paused(&mut conn).await?, pools))
}
