//! `poolkeeper demo`: the whole system in one process. A templates file is applied, the
//! prebuild reconciler and the lifecycle executor run every second, simulated provisioner
//! workers build the pools, and a scripted scenario claims prebuilds and rolls out a new
//! template version while the pools are printed, one line per preset, every second.

mod cycles;
mod progress;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use chrono::Utc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use cycles::reconciler_config;
pub use progress::{Pool, Progress};

use crate::api::{router as api_router, ApiState};
use crate::daemon::http::{base_router, HttpState};
use crate::db::enums::UserRole;
use crate::db::DbPool;
use crate::provisioner::{run_worker, Backends, SimulatedConfig, WorkerConfig};
use crate::store::auth::{create_token, create_user};
use crate::store::claim::{claim_or_create, ClaimRequest};
use crate::store::templates::apply;
use crate::templates_file::{self, TemplateSpec};

/// The example templates file, embedded so that the demo runs from any directory.
pub const EXAMPLE_TEMPLATES: &str = include_str!("../../../examples/templates.toml");

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Reconciliation and lifecycle interval.
    pub interval: Duration,
    /// How long a simulated build takes.
    pub build_duration: Duration,
    /// Simulated provisioner workers (each runs one job at a time).
    pub workers: usize,
    /// How many prebuilds the scenario claims.
    pub claims: usize,
    /// Bound on each wait of the scenario (pools full, rollout complete).
    pub step_timeout: Duration,
    /// Suffix making names unique in a database that already has a previous demo's rows
    /// (empty for a fresh database).
    pub run_tag: String,
    /// Where the HTTP API, health and metrics endpoints listen (port 0: any free port).
    pub listen: SocketAddr,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            build_duration: Duration::from_secs(1),
            workers: 3,
            claims: 2,
            step_timeout: Duration::from_secs(120),
            run_tag: String::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// The background machinery: reconciler, lifecycle executor and provisioner workers.
pub struct Machinery {
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl Machinery {
    /// Starts every loop on the current runtime; readiness and metrics go to `http`.
    pub fn start(pool: &DbPool, url: &str, config: &DemoConfig, http: &HttpState) -> Self {
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for kind in [cycles::LoopKind::Prebuilds, cycles::LoopKind::Lifecycle] {
            tasks.spawn(cycles::run_loop(
                pool.clone(),
                url.to_owned(),
                kind,
                config.interval,
                http.clone(),
                shutdown.clone(),
            ));
        }
        for index in 0..config.workers.max(1) {
            let worker = WorkerConfig {
                tags: Default::default(),
                worker_id: format!("demo-provisioner-{}", index + 1),
                poll_interval: Duration::from_millis(500),
                heartbeat_interval: Duration::from_secs(1),
                backends: Backends {
                    simulated: SimulatedConfig {
                        duration: config.build_duration,
                        ..SimulatedConfig::default()
                    },
                    ..Backends::default()
                },
            };
            let (pool, stop) = (pool.clone(), shutdown.clone());
            tasks.spawn(async move {
                if let Err(err) = run_worker(pool, worker, stop).await {
                    tracing::error!(error = %err, "demo provisioner worker failed");
                }
            });
        }
        Self { shutdown, tasks }
    }

    /// Stops every loop; a worker finishes the job it is running first.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(15), drain).await.is_err() {
            tracing::warn!("demo loops did not stop in time; aborting them");
            self.tasks.abort_all();
        }
    }
}

/// The example template as the demo applies it: short simulated builds, and names made
/// unique by `run_tag`.
pub fn example_spec(config: &DemoConfig) -> anyhow::Result<TemplateSpec> {
    let mut spec = templates_file::parse_toml(EXAMPLE_TEMPLATES)
        .map_err(|err| anyhow!("the embedded example templates file is invalid: {err}"))?;
    if let Some(source) = spec.version.source.as_object_mut() {
        source.insert(
            "duration_secs".to_owned(),
            serde_json::json!(config.build_duration.as_secs_f64()),
        );
    }
    spec.version.name = format!("{}{}", spec.version.name, config.run_tag);
    Ok(spec)
}

/// The same template, next version: a new name is all a rollout needs.
pub fn next_version(spec: &TemplateSpec, config: &DemoConfig) -> TemplateSpec {
    let mut next = spec.clone();
    next.version.name = format!("v2{}", config.run_tag);
    next.version.message = format!("{} (rolled out by poolkeeper demo)", spec.version.message);
    next
}

/// Prints the pools every `every` until `done` holds for a fresh [`Progress`], or fails
/// after `timeout`.
async fn watch_until(
    pool: &DbPool,
    every: Duration,
    timeout: Duration,
    what: &str,
    done: impl Fn(&Progress) -> bool,
) -> anyhow::Result<Progress> {
    let started = Instant::now();
    loop {
        match Progress::load(pool, reconciler_config()).await {
            Ok(progress) => {
                for line in progress.lines() {
                    println!("{line}");
                }
                if done(&progress) {
                    return Ok(progress);
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot read the demo's progress"),
        }
        if started.elapsed() > timeout {
            bail!("timed out after {}s waiting for {what}", timeout.as_secs());
        }
        tokio::time::sleep(every).await;
    }
}

fn counts(progress: &Progress, template_id: Uuid) -> String {
    progress
        .pools_of(Some(template_id))
        .filter(|p| p.active)
        .map(|p| format!("{} {}/{}", p.preset, p.state.eligible, p.state.desired))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The scripted scenario: fill the pools, claim, roll out a new version, wait until the
/// new pools are full and the old ones gone. Returns the demo user's name.
pub async fn scenario(pool: &DbPool, config: &DemoConfig) -> anyhow::Result<String> {
    let spec = example_spec(config)?;
    let outcome = apply(pool, &spec, chrono::Utc::now())
        .await
        .context("applying the example templates file")?;
    let template_id = outcome.template_id;
    println!(
        "templates: {}/{} version {} applied ({outcome})",
        spec.organization, spec.name, spec.version.name
    );

    let every = config.interval;
    let full = watch_until(pool, every, config.step_timeout, "the pools to fill", |p| {
        p.settled(template_id)
    })
    .await?;
    println!("pools: {} {} full: {}", spec.name, spec.version.name, counts(&full, template_id));

    let username = format!("demo{}", config.run_tag);
    let user = create_user(pool, &username, UserRole::Member, chrono::Utc::now())
        .await
        .with_context(|| format!("creating the demo user {username:?}"))?;
    println!("claim: demo user {username} created");
    let Some(target) = full
        .pools_of(Some(template_id))
        .filter(|p| p.active && p.state.desired > 0)
        .max_by_key(|p| p.state.desired)
        .cloned()
    else {
        bail!("the example template has no pool to claim from");
    };
    let parameters: BTreeMap<String, String> = spec
        .presets
        .iter()
        .find(|p| p.name == target.preset)
        .map(|p| p.parameters.clone())
        .unwrap_or_default();
    for n in 1..=config.claims {
        let request = ClaimRequest {
            user_id: user.id,
            template_id,
            preset_id: Some(target.preset_id),
            name: format!("demo-{n}"),
            autostart_schedule: None,
            ttl_secs: None,
            parameters: parameters.clone(),
        };
        let claimed = claim_or_create(pool, Utc::now(), &request)
            .await
            .with_context(|| format!("claiming workspace {}", request.name))?;
        println!(
            "claim: {username} got workspace {} ({}) from {}/{}: {}",
            claimed.workspace.name,
            claimed.workspace.id,
            target.template,
            target.preset,
            if claimed.claimed { "prebuild claimed" } else { "no prebuild ready, built fresh" },
        );
    }
    let refilled = watch_until(pool, every, config.step_timeout, "the pools to refill", |p| {
        p.settled(template_id)
    })
    .await?;
    println!(
        "pools: refilled after {} claims: {}",
        refilled.claims,
        counts(&refilled, template_id)
    );
    // The example's pool follows its claims (rules §4 "Autoscale"): the burst grew it.
    let grown = refilled
        .pools_of(Some(template_id))
        .find(|p| p.preset_id == target.preset_id)
        .map(|p| p.state.desired)
        .filter(|desired| *desired > target.state.desired);
    if let Some(desired) = grown {
        println!(
            "autoscale: {}/{} grew from {} to {} prebuilds after {} claims; it shrinks back once \
             the demand has been lower for a whole window",
            target.template, target.preset, target.state.desired, desired, config.claims
        );
    }

    let next = next_version(&spec, config);
    let rolled = apply(pool, &next, chrono::Utc::now())
        .await
        .context("rolling out the new template version")?;
    println!(
        "rollout: {}/{} version {} is now active ({rolled}); replacing the {} pools",
        next.organization, next.name, next.version.name, spec.version.name
    );
    let after = watch_until(pool, every, config.step_timeout, "the rollout", |p| {
        p.settled(template_id)
            && p.pools_of(Some(template_id))
                .any(|pool| pool.active && pool.version == next.version.name)
    })
    .await?;
    println!(
        "rollout: complete: {} {} pools full ({}), no {} prebuild left",
        next.name,
        next.version.name,
        counts(&after, template_id),
        spec.version.name
    );
    println!("scenario complete");
    Ok(username)
}

/// Serves the API, health and metrics on `listen` until `shutdown`; returns the bound address.
async fn serve_http(
    pool: &DbPool,
    http: &HttpState,
    listen: SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr().context("the listening socket has no address")?;
    let dashboard = crate::dashboard::DashboardState::new(pool.clone(), reconciler_config());
    let router = base_router(http.clone())
        .merge(api_router(ApiState::new(pool.clone()).with_metrics(http.metrics.clone())))
        .merge(crate::dashboard::router(dashboard));
    let server = tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(err) = served {
            tracing::warn!(error = %err, "the demo's HTTP server stopped");
        }
    });
    Ok((address, server))
}

/// An owner for the dashboard (`operator`, made unique by the run tag; reused when it exists
/// already, as with `--database-url`) and a fresh token to paste into its sign-in form.
async fn dashboard_token(pool: &DbPool, config: &DemoConfig) -> anyhow::Result<String> {
    let username = format!("operator{}", config.run_tag);
    match create_user(pool, &username, UserRole::Owner, Utc::now()).await {
        Ok(_) | Err(crate::store::auth::AuthError::UserExists(_)) => {}
        Err(err) => return Err(err).with_context(|| format!("creating the owner {username:?}")),
    }
    let (secret, _) = create_token(pool, &username, "", chrono::TimeDelta::days(1), Utc::now())
        .await
        .with_context(|| format!("creating a token for {username}"))?;
    Ok(secret)
}

/// A token for the demo user, and a claim through the API to copy and paste.
async fn print_api_example(
    pool: &DbPool,
    address: SocketAddr,
    username: &str,
    config: &DemoConfig,
) -> anyhow::Result<()> {
    let (secret, expires) =
        create_token(pool, username, "demo", chrono::TimeDelta::days(1), Utc::now())
            .await
            .with_context(|| format!("creating an API token for {username}"))?;
    let spec = example_spec(config)?;
    let preset = spec.presets.first().map(|p| p.name.as_str()).unwrap_or_default();
    println!(
        "api: token for {username} (expires {}): {secret}",
        expires.format("%Y-%m-%d %H:%M UTC")
    );
    println!(
        "api: try  curl -s -X POST http://{address}/api/v1/workspaces \\
       -H 'Authorization: Bearer {secret}' -H 'Content-Type: application/json' \\
       -d '{{\"template\": \"{}\", \"preset\": \"{preset}\", \"name\": \"my-dev\"}}'",
        spec.name
    );
    Ok(())
}

/// Runs the demo against `url`: loops, then the scenario; then, unless `exit_after_scenario`,
/// keeps printing the pools until `stop` resolves (Ctrl-C). Everything stops before return.
pub async fn run(
    url: &str,
    config: &DemoConfig,
    exit_after_scenario: bool,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let pool_config = crate::db::pool::PoolConfig { max_size: 20, ..Default::default() };
    let pool = crate::db::pool::connect(url, &pool_config)
        .await
        .with_context(|| format!("connecting to {}", crate::db::pool::redacted_url(url)))?;
    let http = HttpState::default();
    let http_stop = CancellationToken::new();
    let (address, server) = serve_http(&pool, &http, config.listen, http_stop.clone()).await?;
    println!("demo: HTTP API on http://{address}/api/v1 (OpenAPI at /api/v1/openapi.json)");
    println!("demo: metrics on http://{address}/metrics, health on /healthz and /readyz");
    match dashboard_token(&pool, config).await {
        Ok(secret) => println!(
            "demo: dashboard on http://{address}/dashboard (sign in with this owner token: {secret})"
        ),
        Err(err) => tracing::warn!(error = %err, "cannot create the dashboard's owner token"),
    }
    let machinery = Machinery::start(&pool, url, config, &http);
    tokio::pin!(stop);
    let (result, interrupted) = tokio::select! {
        result = scenario(&pool, config) => (result, false),
        () = &mut stop => {
            println!("demo: interrupted");
            (Ok(String::new()), true)
        }
    };
    if let Ok(username) = &result {
        if !interrupted {
            println!("demo: the API and metrics listen on http://{address}");
            if let Err(err) = print_api_example(&pool, address, username, config).await {
                tracing::warn!(error = %err, "cannot print the API example");
            }
        }
    }
    let result = match result.map(drop) {
        Ok(()) if !exit_after_scenario && !interrupted => {
            println!("demo: still running; press Ctrl-C to stop");
            let every = config.interval * 2;
            let watch = watch_until(&pool, every, Duration::MAX, "Ctrl-C", |_| false);
            tokio::select! {
                result = watch => result.map(|_| ()),
                () = &mut stop => Ok(()),
            }
        }
        other => other,
    };
    machinery.stop().await;
    http_stop.cancel();
    if let Err(err) = server.await {
        tracing::warn!(error = %err, "the demo's HTTP server task failed");
    }
    drop(pool);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_api_it_serves_counts_its_claims_in_the_metrics_it_serves() {
        // A lazy pool: nothing here reaches the database.
        let url = "postgres://demo@127.0.0.1:1/demo";
        let pool = crate::db::pool::build(url, &crate::db::pool::PoolConfig::default())
            .expect("a lazy pool");
        let http = HttpState::default();
        let shutdown = CancellationToken::new();
        let listen: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let (_, server) = serve_http(&pool, &http, listen, shutdown.clone()).await.expect("serve");
        let exported = http.metrics.encode();
        shutdown.cancel();
        server.await.expect("server task");
        for series in ["poolkeeper_claim_batches_total", "poolkeeper_claims_batched_total"] {
            assert!(exported.contains(series), "{series} missing from\n{exported}");
        }
    }
}
