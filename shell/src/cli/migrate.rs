//! `poolkeeper migrate`: bring the database schema up to date (or, for development, tear
//! it down).

use std::process::ExitCode;

use crate::db::migrate;
use crate::db::pool::redacted_url;

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// PostgreSQL URL, e.g. postgres://poolkeeper:secret@db.internal:5432/poolkeeper.
    #[arg(long, env = "POOLKEEPER_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Revert every migration instead, dropping all Poolkeeper tables and their data.
    /// For development only.
    #[arg(long)]
    pub revert_all: bool,
}

/// `poolkeeper migrate`: apply pending migrations (or revert all); exit 1 on failure.
pub fn migrate(args: &MigrateArgs) -> ExitCode {
    let result = if args.revert_all {
        migrate::revert_all(&args.database_url)
    } else {
        migrate::run_pending(&args.database_url)
    };
    let verb = if args.revert_all { "reverted" } else { "applied" };
    match result {
        Ok(versions) if versions.is_empty() && args.revert_all => {
            println!("nothing to revert: no migration is applied");
            ExitCode::SUCCESS
        }
        Ok(versions) if versions.is_empty() => {
            println!("the database is up to date");
            ExitCode::SUCCESS
        }
        Ok(versions) => {
            println!("{verb} {} migration(s): {}", versions.len(), versions.join(", "));
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err} (database {})", redacted_url(&args.database_url));
            ExitCode::FAILURE
        }
    }
}
