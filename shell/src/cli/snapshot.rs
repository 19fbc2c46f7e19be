//! `poolkeeper snapshot --kind prebuilds|lifecycle`: the live state as a replay file, so
//! `poolkeeper replay FILE` shows what the daemon would decide right now.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use poolkeeper_core::ReplayInput;

use crate::db::pool::{self, redacted_url, PoolConfig};
use crate::store::lifecycle::load_lifecycle_snapshot;
use crate::store::prebuilds::load_prebuild_snapshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SnapshotKind {
    Prebuilds,
    Lifecycle,
}

#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    #[arg(long, env = "POOLKEEPER_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    #[arg(long, value_enum)]
    pub kind: SnapshotKind,
    /// Write here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Reconciler settings recorded in a prebuilds snapshot (as `poolkeeper run` uses them).
    #[command(flatten)]
    pub reconciler: super::ReconcilerArgs,
}

pub fn snapshot(args: &SnapshotArgs) -> ExitCode {
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(load(args)))
        .and_then(|input| Ok(serde_json::to_string_pretty(&input)?));
    let text = match result {
        Ok(text) => text,
        Err(err) => {
            eprintln!("error: {err:#} (database {})", redacted_url(&args.database_url));
            return ExitCode::FAILURE;
        }
    };
    match &args.out {
        Some(path) => match std::fs::write(path, text + "\n") {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: cannot write {}: {err}", path.display());
                ExitCode::FAILURE
            }
        },
        None => {
            println!("{text}");
            ExitCode::SUCCESS
        }
    }
}

async fn load(args: &SnapshotArgs) -> anyhow::Result<ReplayInput> {
    let pool =
        pool::build(&args.database_url, &PoolConfig { max_size: 1, ..PoolConfig::default() })?;
    let mut conn = pool.get().await?;
    let now = Utc::now();
    let mut input = ReplayInput::new(now);
    match args.kind {
        SnapshotKind::Prebuilds => {
            let config = args.reconciler.config();
            input.prebuilds = Some(load_prebuild_snapshot(&mut conn, now, config).await?.snapshot);
        }
        SnapshotKind::Lifecycle => {
            input.lifecycle = Some(load_lifecycle_snapshot(&mut conn, now).await?);
        }
    }
    Ok(input)
}
