//! `poolkeeper run`: the daemon (lifecycle + prebuild loops, health and metrics HTTP).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::signals::{watch_signals, Signals};
use crate::daemon::http::{base_router, with_access_log, HttpState};
use crate::daemon::supervise::supervise;
use crate::daemon::{DaemonPools, DaemonSettings, Recorder};
use crate::db::pool::{self, redacted_url, PoolConfig, SessionSettings};
use crate::telemetry::logging::{self, LogFormat};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EmbeddedProvisioner {
    /// Run a simulated provisioner worker inside the daemon.
    Simulated,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// PostgreSQL URL.
    #[arg(long, env = "POOLKEEPER_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Time between lifecycle ticks (90s, 5m; bare numbers are seconds, as for every duration).
    #[arg(long, env = "POOLKEEPER_LIFECYCLE_INTERVAL", value_parser = super::parse_secs, default_value_t = 60)]
    pub lifecycle_interval: u64,
    /// Seconds between prebuild cycles (a preset change also wakes the loop at once).
    #[arg(long, env = "POOLKEEPER_PREBUILD_INTERVAL", value_parser = super::parse_secs, default_value_t = 60)]
    pub prebuild_interval: u64,
    /// How often the prebuild loop reloads its snapshot whole; between reloads it reads only
    /// what changed (its change feed).
    #[arg(long, env = "POOLKEEPER_PREBUILD_RESYNC_INTERVAL", value_parser = super::parse_secs, default_value_t = 300)]
    pub prebuild_resync_interval: u64,
    /// How often, between prebuild cycles, the leader looks at its change feed for something
    /// unread (a claim, a job's end, an agent that became ready) and runs a cycle at once if
    /// there is (500ms, 2s; at least 250ms).
    #[arg(long, env = "POOLKEEPER_PREBUILD_FEED_POLL", default_value = "1s", value_parser = super::parse_duration)]
    pub prebuild_feed_poll: Duration,
    /// About how many new prebuilds one transaction creates: the creates of many presets are
    /// packed into transactions of this size (a preset's creates are never split).
    #[arg(long, env = "POOLKEEPER_PREBUILD_CREATE_BATCH", default_value_t = 2000)]
    pub prebuild_create_batch: usize,
    #[command(flatten)]
    pub reconciler: super::ReconcilerArgs,
    /// Maximum database connections of each pool: the API's, and each loop's (a loop applies
    /// up to half as many changes at once). The embedded worker has 4 more.
    #[arg(long, env = "POOLKEEPER_POOL_SIZE", default_value_t = crate::db::pool::DEFAULT_POOL_SIZE)]
    pub pool_size: usize,
    /// Longest a statement may run, in seconds (PostgreSQL's statement_timeout; 0 = none).
    #[arg(long, env = "POOLKEEPER_STATEMENT_TIMEOUT", value_parser = super::parse_secs, default_value_t = 60)]
    pub statement_timeout: u64,
    /// Longest wait for a row or table lock, in seconds (lock_timeout; 0 = none).
    #[arg(long, env = "POOLKEEPER_LOCK_TIMEOUT", value_parser = super::parse_secs, default_value_t = 10)]
    pub lock_timeout: u64,
    /// Longest a transaction may sit idle, in seconds
    /// (idle_in_transaction_session_timeout; 0 = none).
    #[arg(long, env = "POOLKEEPER_IDLE_IN_TRANSACTION_TIMEOUT", value_parser = super::parse_secs, default_value_t = 60)]
    pub idle_in_transaction_timeout: u64,
    /// Largest retry delay while the database is unreachable, in seconds.
    #[arg(long, env = "POOLKEEPER_MAX_RETRY_DELAY", value_parser = super::parse_secs, default_value_t = 60)]
    pub max_retry_delay: u64,
    /// Address of the health and metrics endpoints.
    #[arg(long, env = "POOLKEEPER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Record every cycle's replay input and decisions to this directory.
    #[arg(long, env = "POOLKEEPER_RECORD_DIR")]
    pub record_dir: Option<PathBuf>,
    /// Recorded cycles to keep.
    #[arg(long, env = "POOLKEEPER_RECORD_KEEP", default_value_t = 100)]
    pub record_keep: usize,
    #[arg(long, env = "POOLKEEPER_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Apply pending migrations before starting.
    #[arg(long, env = "POOLKEEPER_MIGRATE")]
    pub migrate: bool,
    /// Embed a provisioner worker.
    #[arg(long, env = "POOLKEEPER_PROVISIONER", value_enum)]
    pub provisioner: Option<EmbeddedProvisioner>,
    /// Fail a running job whose provisioner sent no heartbeat for this many seconds (checked
    /// every lifecycle tick; keep it well above the provisioners' --heartbeat-interval).
    #[arg(long, env = "POOLKEEPER_JOB_HEARTBEAT_TIMEOUT", value_parser = super::parse_secs, default_value_t = 300)]
    pub job_heartbeat_timeout: u64,
    /// Fail a pending job no provisioner took within this many seconds.
    #[arg(long, env = "POOLKEEPER_PENDING_JOB_TIMEOUT", value_parser = super::parse_secs, default_value_t = 1800)]
    pub pending_job_timeout: u64,
    #[command(flatten)]
    pub notifications: super::notifications::DeliveryArgs,
    /// Purge builds (with their jobs and agents) finished longer ago than this, except those
    /// a rule still reads (30d; 0 = keep for ever).
    #[arg(long, env = "POOLKEEPER_RETENTION_BUILDS", value_parser = super::parse_secs, default_value_t = 30 * 86_400)]
    pub retention_builds: u64,
    /// Purge audit entries older than this (365d; 0 = keep for ever).
    #[arg(long, env = "POOLKEEPER_RETENTION_AUDIT", value_parser = super::parse_secs, default_value_t = 365 * 86_400)]
    pub retention_audit: u64,
    /// Time between two retention purges (1h).
    #[arg(long, env = "POOLKEEPER_RETENTION_INTERVAL", value_parser = super::parse_secs, default_value_t = 3600)]
    pub retention_interval: u64,
    /// Rows (or workspaces' builds) deleted per transaction by the purge.
    #[arg(long, env = "POOLKEEPER_RETENTION_BATCH", default_value_t = 500)]
    pub retention_batch: u32,
}

impl RunArgs {
    /// A pool of `max_size` connections named `poolkeeper-{role}`, with the session bounds
    /// given on the command line.
    fn pool_config(&self, role: &str, max_size: usize) -> PoolConfig {
        PoolConfig {
            max_size: max_size.max(1),
            session: SessionSettings {
                statement_timeout: Duration::from_secs(self.statement_timeout),
                lock_timeout: Duration::from_secs(self.lock_timeout),
                idle_in_transaction_timeout: Duration::from_secs(self.idle_in_transaction_timeout),
                ..SessionSettings::for_role(role)
            },
            ..PoolConfig::default()
        }
    }
}

pub fn run(args: &RunArgs) -> ExitCode {
    logging::init(args.log_format);
    match run_daemon(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#} (database {})", redacted_url(&args.database_url));
            ExitCode::FAILURE
        }
    }
}

fn run_daemon(args: &RunArgs) -> anyhow::Result<()> {
    if args.migrate {
        let applied = crate::db::migrate::run_pending(&args.database_url).context("migrations")?;
        tracing::info!(applied = applied.len(), "migrations applied");
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let api_pool = pool::build(&args.database_url, &args.pool_config("api", args.pool_size))?;
        let loop_size = (args.pool_size / 2).max(2);
        let pools = DaemonPools {
            prebuilds: pool::build(&args.database_url, &args.pool_config("prebuilds", loop_size))?,
            lifecycle: pool::build(&args.database_url, &args.pool_config("lifecycle", loop_size))?,
        };
        let shutdown = CancellationToken::new();
        // Registered before anything else runs, so no signal meets the default handler.
        let signals = Signals::register().context("cannot listen for signals")?;
        tokio::spawn(watch_signals(
            signals,
            shutdown.clone(),
            "shutting down after the current action (signal again to exit now)",
        ));
        let state = HttpState::default();
        // Bound once here, so that a port in use is reported at start; a restart of the
        // server (after it died) binds the address again.
        let first_listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let first_listener = std::sync::Mutex::new(Some(first_listener));
        tracing::info!(listen = %args.listen, "HTTP API, health and metrics endpoints up");
        let api_state =
            crate::api::ApiState::new(api_pool.clone()).with_metrics(state.metrics.clone());
        let dashboard =
            crate::dashboard::DashboardState::new(api_pool.clone(), args.reconciler.config());
        let router = with_access_log(
            base_router(state.clone())
                .merge(crate::api::router(api_state))
                .merge(crate::dashboard::router(dashboard)),
        );
        let (listen, http_shutdown) = (args.listen, shutdown.clone());
        let http = supervise("http", state.clone(), shutdown.clone(), move || {
            let taken = first_listener.lock().ok().and_then(|mut first| first.take());
            let (router, http_shutdown) = (router.clone(), http_shutdown.clone());
            async move {
                let listener = match taken {
                    Some(listener) => listener,
                    None => match tokio::net::TcpListener::bind(listen).await {
                        Ok(listener) => listener,
                        Err(err) => {
                            tracing::error!(%listen, error = %err, "cannot listen");
                            return;
                        }
                    },
                };
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
                    .await;
                if let Err(err) = served {
                    tracing::error!(error = %err, "HTTP server failed");
                }
            }
        });
        let worker = match args.provisioner {
            Some(_) => {
                let worker_pool =
                    pool::build(&args.database_url, &args.pool_config("provisioner", 4))?;
                let worker_shutdown = shutdown.clone();
                Some(supervise("worker", state.clone(), shutdown.clone(), move || {
                    let (pool, shutdown) = (worker_pool.clone(), worker_shutdown.clone());
                    async move {
                        let config = crate::provisioner::WorkerConfig::default();
                        if let Err(err) = crate::provisioner::run_worker(pool, config, shutdown).await
                        {
                            tracing::warn!(error = %err, "embedded provisioner stopped with an error");
                        }
                    }
                }))
            }
            None => None,
        };
        let dispatcher = spawn_dispatcher(args, &state, &shutdown)?;
        let settings = DaemonSettings {
            database_url: args.database_url.clone(),
            lifecycle_interval: Duration::from_secs(args.lifecycle_interval.max(1)),
            prebuild_interval: Duration::from_secs(args.prebuild_interval.max(1)),
            prebuild_resync_interval: Duration::from_secs(args.prebuild_resync_interval.max(1)),
            prebuild_feed_poll: args.prebuild_feed_poll,
            prebuild_create_batch: args.prebuild_create_batch.max(1),
            max_retry_delay: Duration::from_secs(args.max_retry_delay.max(1)),
            reconciler: args.reconciler.config(),
            parallelism: (loop_size / 2).max(1),
            recorder: args.record_dir.clone().map(|dir| Recorder::new(dir, args.record_keep)),
            // Always: a job whose (embedded or separate) provisioner died must not stay
            // `running` forever.
            reaper: Some(crate::provisioner::ReaperConfig {
                heartbeat_timeout: Duration::from_secs(args.job_heartbeat_timeout.max(1)),
                pending_timeout: Duration::from_secs(args.pending_job_timeout.max(1)),
            }),
            retention: Some(crate::daemon::RetentionSettings {
                retention: poolkeeper_core::retention::Retention {
                    builds_secs: args.retention_builds,
                    audit_secs: args.retention_audit,
                },
                interval: Duration::from_secs(args.retention_interval.max(1)),
                batch: args.retention_batch.max(1),
            }),
        };
        crate::daemon::run(settings, pools, state, shutdown).await;
        if let Some(worker) = worker {
            let _ = worker.await;
        }
        if let Some(dispatcher) = dispatcher {
            let _ = dispatcher.await;
        }
        let _ = http.await;
        tracing::info!("daemon stopped");
        Ok(())
    })
}

/// The notification dispatcher, supervised, on a small pool of its own; none when no
/// delivery method is configured (the outbox then keeps every message pending).
fn spawn_dispatcher(
    args: &RunArgs,
    state: &HttpState,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let methods = args.notifications.methods()?;
    let config = args.notifications.dispatch_config()?;
    if methods.is_empty() {
        tracing::info!(
            "no notification delivery method configured; notifications stay in the outbox"
        );
        return Ok(None);
    }
    let session = args.pool_config("notifications", 1).session;
    let pool = pool::build(&args.database_url, &super::notifications::pool_config(session))?;
    let (metrics, stop) = (state.metrics.clone(), shutdown.clone());
    Ok(Some(supervise("notifications", state.clone(), shutdown.clone(), move || {
        let dispatcher =
            crate::notify::Dispatcher::new(pool.clone(), methods.clone(), config.clone())
                .with_metrics(metrics.clone());
        dispatcher.run(stop.clone())
    })))
}
