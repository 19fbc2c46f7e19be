//! The `poolkeeper` command line: one binary, one module per subcommand.

mod audit;
mod demo;
mod migrate;
mod notifications;
mod output;
mod prebuilds;
mod provisioner;
mod replay;
mod run;
mod signals;
mod snapshot;
mod templates;
mod tokens;
mod users;
mod workspaces;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Poolkeeper: the lifecycle executor and prebuild reconciler for cloud development workspaces.
#[derive(Debug, Parser)]
#[command(name = "poolkeeper", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending database migrations (POOLKEEPER_DATABASE_URL).
    Migrate(migrate::MigrateArgs),
    /// Run a replay file through the core and print the decisions as JSON.
    Replay(replay::ReplayArgs),
    // Boxed: its flags make it several times the size of the other commands.
    /// Run the daemon: the lifecycle executor and the prebuild reconciler.
    Run(Box<run::RunArgs>),
    /// Record the live state of the database as a replay file.
    Snapshot(snapshot::SnapshotArgs),
    /// Pause, resume or inspect the prebuild reconciler.
    Prebuilds(prebuilds::PrebuildsArgs),
    /// Run a provisioner worker: take pending jobs and build them (simulated or terraform).
    Provisioner(provisioner::ProvisionerArgs),
    /// Declare templates, versions, presets and prebuild schedules from a file.
    Templates(templates::TemplatesArgs),
    /// Manage API users.
    Users(users::UsersArgs),
    /// Manage API bearer tokens.
    Tokens(tokens::TokensArgs),
    /// Create (claim), list, start, stop and delete workspaces; set autostart and TTL.
    Workspaces(workspaces::WorkspacesArgs),
    /// Show the notification outbox.
    Notifications(notifications::NotificationsArgs),
    /// Show the audit log.
    Audit(audit::AuditArgs),
    /// Run everything on a throw-away database: pools fill, claims, a version rollout.
    Demo(demo::DemoArgs),
}

/// The prebuild reconciler's settings, shared by `run` and by `snapshot` (which records
/// them in the replay file, as the daemon would use them).
#[derive(Debug, Clone, clap::Args)]
pub struct ReconcilerArgs {
    /// Prebuild creation backoff per failed build (90s, 5m; bare numbers are seconds).
    #[arg(long, env = "POOLKEEPER_BACKOFF_INTERVAL", value_parser = parse_secs, default_value_t = 60)]
    pub backoff_interval: u64,
    /// How far back failed prebuild builds count (1h; bare numbers are seconds).
    #[arg(long, env = "POOLKEEPER_BACKOFF_LOOKBACK", value_parser = parse_secs, default_value_t = 3600)]
    pub backoff_lookback: u64,
    /// Consecutive failed prebuild builds that stop a preset (0 = never).
    #[arg(long, env = "POOLKEEPER_FAILURE_HARD_LIMIT", default_value_t = 3)]
    pub failure_hard_limit: u32,
    /// At most this many prebuild creates pending per preset (0 = no cap).
    #[arg(long, env = "POOLKEEPER_MAX_PENDING_CREATES", default_value_t = 0)]
    pub max_pending_creates: u32,
    /// Failed prebuilds kept per preset for inspection, the newest ones.
    #[arg(long, env = "POOLKEEPER_FAILED_PREBUILDS_KEEP", default_value_t = poolkeeper_core::prebuilds::DEFAULT_FAILED_KEEP)]
    pub failed_prebuilds_keep: u32,
    /// Delete the older failed prebuilds once they are older than this (1h; 0 = never).
    #[arg(long, env = "POOLKEEPER_FAILED_PREBUILDS_GRACE", value_parser = parse_secs, default_value_t = 3600)]
    pub failed_prebuilds_grace: u64,
}

impl ReconcilerArgs {
    pub fn config(&self) -> poolkeeper_core::prebuilds::ReconcilerConfig {
        poolkeeper_core::prebuilds::ReconcilerConfig {
            backoff_interval_secs: self.backoff_interval,
            backoff_lookback_secs: self.backoff_lookback,
            failure_hard_limit: self.failure_hard_limit,
            max_pending_creates_per_preset: self.max_pending_creates,
            failed_keep: self.failed_prebuilds_keep,
            failed_grace_secs: self.failed_prebuilds_grace,
        }
    }
}

/// A duration flag: humantime's syntax (`90s`, `5m`, `1h30m`, `500ms`), or a bare number of
/// seconds (what every duration flag took before, so old configurations keep working).
pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = text.parse().map_err(|_| format!("{text:?} is out of range"))?;
        return Ok(std::time::Duration::from_secs(secs));
    }
    humantime::parse_duration(text)
        .map_err(|err| format!("{text:?} is not a duration like 90s, 5m or 1h30m ({err})"))
}

/// A whole-seconds flag in the syntax of [`parse_duration`] (`5m` is 300).
pub(crate) fn parse_secs(text: &str) -> Result<u64, String> {
    let duration = parse_duration(text)?;
    if duration.subsec_nanos() != 0 {
        return Err(format!("{text:?}: this flag takes whole seconds"));
    }
    Ok(duration.as_secs())
}

/// Exit code for invalid input (a bad replay file, a bad flag or configuration value).
pub const EXIT_INVALID_INPUT: u8 = 2;

/// The database URL a command needs (`--database-url` or `POOLKEEPER_DATABASE_URL`); its
/// absence is invalid input.
fn database_url(url: Option<&str>) -> Result<&str, ExitCode> {
    url.ok_or_else(|| {
        eprintln!("error: --database-url or POOLKEEPER_DATABASE_URL is required");
        ExitCode::from(EXIT_INVALID_INPUT)
    })
}

/// Runs one command's future on a runtime of its own (the CLI is synchronous).
fn block_on<F: std::future::Future>(future: F) -> std::io::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    Ok(runtime.block_on(future))
}

/// Runs `command` on a pool of its own for `url` and prints a failure: as invalid input
/// (exit 2) when `invalid_input` words it, else with the password-free URL (exit 1).
fn on_database<T, E>(
    url: &str,
    command: impl AsyncFnOnce(&crate::db::DbPool) -> Result<T, E>,
    invalid_input: impl FnOnce(&E) -> Option<String>,
) -> Result<T, ExitCode>
where
    E: std::fmt::Display + From<crate::store::StoreError>,
{
    use crate::db::pool::{self, redacted_url, PoolConfig};
    let result = block_on(async {
        let pool = pool::connect(url, &PoolConfig::default())
            .await
            .map_err(|err| E::from(crate::store::StoreError::from(err)))?;
        command(&pool).await
    });
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => match invalid_input(&err) {
            Some(message) => {
                eprintln!("error: {message}");
                Err(ExitCode::from(EXIT_INVALID_INPUT))
            }
            None => {
                eprintln!("error: {err} (database {})", redacted_url(url));
                Err(ExitCode::FAILURE)
            }
        },
        Err(err) => {
            eprintln!("error: {err}");
            Err(ExitCode::FAILURE)
        }
    }
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Migrate(args) => migrate::migrate(&args),
        Command::Replay(args) => replay::replay(&args),
        Command::Run(args) => run::run(&args),
        Command::Snapshot(args) => snapshot::snapshot(&args),
        Command::Prebuilds(args) => prebuilds::prebuilds(&args),
        Command::Provisioner(args) => provisioner::provisioner(&args),
        Command::Templates(args) => templates::templates(&args),
        Command::Users(args) => users::users(&args),
        Command::Tokens(args) => tokens::tokens(&args),
        Command::Workspaces(args) => workspaces::workspaces(&args),
        Command::Demo(args) => demo::demo(&args),
        Command::Notifications(args) => notifications::notifications(&args),
        Command::Audit(args) => audit::audit(&args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn durations_take_humantime_or_bare_seconds() {
        use std::time::Duration;
        assert_eq!(super::parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(super::parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(super::parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(super::parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(super::parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(super::parse_duration("5 parsecs").is_err());
        assert!(super::parse_duration("").is_err());
        assert_eq!(super::parse_secs("5m"), Ok(300));
        assert_eq!(super::parse_secs("3600"), Ok(3600));
        assert!(super::parse_secs("1500ms").unwrap_err().contains("whole seconds"));
    }
}
