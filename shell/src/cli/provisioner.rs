//! `poolkeeper provisioner`: run one provisioner worker until Ctrl-C / SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::EXIT_INVALID_INPUT;
use crate::db::pool::{self, redacted_url, PoolConfig};
use crate::provisioner::{run_worker, Backends, SimulatedConfig, TerraformConfig, WorkerConfig};
use crate::telemetry::logging::{self, LogFormat};

#[derive(Debug, clap::Args)]
pub struct ProvisionerArgs {
    /// PostgreSQL URL, e.g. postgres://poolkeeper:secret@db.internal:5432/poolkeeper.
    #[arg(long, env = "POOLKEEPER_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Backup poll for pending jobs (NOTIFY wakes the worker sooner), e.g. 5s, 500ms, 1m.
    #[arg(long, env = "POOLKEEPER_POLL_INTERVAL", default_value = "5s", value_parser = super::parse_duration)]
    pub poll_interval: Duration,
    /// Heartbeat of a running job, at a fixed rate; keep it well under the reaper's timeout.
    #[arg(long, env = "POOLKEEPER_HEARTBEAT_INTERVAL", default_value = "15s", value_parser = super::parse_duration)]
    pub heartbeat_interval: Duration,
    /// Name recorded on the jobs this worker takes (default: provisioner-<random uuid>).
    #[arg(long, env = "POOLKEEPER_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Simulated backend: how long a build takes, unless the version's source says otherwise.
    #[arg(long, env = "POOLKEEPER_SIM_DURATION", default_value = "2s", value_parser = super::parse_duration)]
    pub sim_duration: Duration,
    /// Simulated backend: share of builds that fail, 0.0 to 1.0.
    #[arg(long, env = "POOLKEEPER_SIM_FAILURE_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub sim_failure_rate: f64,
    /// Simulated backend: how long an agent takes to become ready after the build.
    #[arg(long, env = "POOLKEEPER_SIM_AGENT_START", default_value = "0s", value_parser = super::parse_duration)]
    pub sim_agent_start: Duration,
    /// Simulated backend: seed of the failure draws (same seed, same failing jobs).
    #[arg(long, env = "POOLKEEPER_SIM_SEED", default_value_t = 0)]
    pub sim_seed: u64,
    /// The terraform binary (looked up on PATH).
    #[arg(long, env = "POOLKEEPER_TERRAFORM_BIN", default_value = "terraform")]
    pub terraform_bin: String,
    /// Parent of the per-job terraform working directories, and of the spool of build
    /// results not yet saved (a restarted worker saves them; keep it across restarts).
    /// Default: a directory in the system temporary directory.
    #[arg(long, env = "POOLKEEPER_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Log lines as text, or as JSON for production.
    #[arg(long, env = "POOLKEEPER_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// A tag of this worker, key=value (repeat the flag, or separate with commas): it takes
    /// only jobs whose tags it has (rules §7); without tags, only untagged jobs.
    #[arg(long = "tag", env = "POOLKEEPER_TAG", value_delimiter = ',', value_parser = poolkeeper_core::tags::parse_tag)]
    pub tags: Vec<(String, String)>,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{text:?} is not a rate between 0.0 and 1.0")),
    }
}

pub fn provisioner(args: &ProvisionerArgs) -> ExitCode {
    logging::init(args.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: &ProvisionerArgs) -> ExitCode {
    let defaults = WorkerConfig::default();
    let config = WorkerConfig {
        worker_id: args.worker_id.clone().unwrap_or(defaults.worker_id),
        poll_interval: args.poll_interval,
        heartbeat_interval: args.heartbeat_interval,
        backends: Backends {
            simulated: SimulatedConfig {
                duration: args.sim_duration,
                failure_rate: args.sim_failure_rate,
                agent_start: args.sim_agent_start,
                seed: args.sim_seed,
            },
            terraform: TerraformConfig {
                bin: args.terraform_bin.clone(),
                work_dir: args.work_dir.clone().unwrap_or(TerraformConfig::default().work_dir),
            },
        },
        tags: args.tags.iter().cloned().collect(),
    };
    if config.tags.len() < args.tags.len() {
        eprintln!("error: --tag: a key is given twice");
        return ExitCode::from(EXIT_INVALID_INPUT);
    }
    if config.worker_id.trim().is_empty() {
        eprintln!("error: --worker-id must not be empty");
        return ExitCode::from(EXIT_INVALID_INPUT);
    }
    // Lazy: a database that is down now is retried by the worker loop, not fatal.
    let pool = match pool::build(&args.database_url, &PoolConfig::default()) {
        Ok(pool) => pool,
        Err(err) => {
            eprintln!("error: {err} (database {})", redacted_url(&args.database_url));
            return ExitCode::from(EXIT_INVALID_INPUT);
        }
    };
    let shutdown = CancellationToken::new();
    let signals = match super::signals::Signals::register() {
        Ok(signals) => signals,
        Err(err) => {
            eprintln!("error: cannot listen for signals: {err}");
            return ExitCode::FAILURE;
        }
    };
    tokio::spawn(super::signals::watch_signals(
        signals,
        shutdown.clone(),
        "shutting down: finishing the current job, taking no new one (signal again to exit now)",
    ));
    match run_worker(pool, config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_rates() {
        use crate::cli::parse_duration;
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("s").is_err());
        assert!(parse_rate("1.5").is_err());
    }
}
