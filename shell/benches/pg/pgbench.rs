//! The reference: `pgbench` running plain single-INSERT transactions on the same server.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::report::percentile;
use crate::server::{self, Server};

pub const DATABASE: &str = "bench_pgbench";
const SCRIPT: &str = "INSERT INTO reference_inserts (payload) VALUES ('x');\n";

/// One pgbench run.
#[derive(Debug, Clone)]
pub struct Reference {
    pub clients: usize,
    pub tps: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub mean: Duration,
    /// The command line, for the README (port and paths replaced by placeholders).
    pub command: String,
}

/// The reference runs, by client count.
#[derive(Debug, Clone, Default)]
pub struct References {
    pub runs: Vec<Reference>,
}

impl References {
    pub fn at(&self, clients: usize) -> Option<&Reference> {
        self.runs.iter().find(|r| r.clients == clients)
    }

    /// Mean latency of one INSERT transaction with one client: the unit durations are
    /// compared with.
    pub fn single(&self) -> Option<&Reference> {
        self.at(1)
    }

    /// `value` expressed in single-client pgbench transactions, e.g. "= 412 INSERT txns".
    pub fn in_transactions(&self, value: Duration) -> String {
        match self.single() {
            Some(r) if !r.mean.is_zero() => {
                format!("= {:.0} INSERT txns", value.as_secs_f64() / r.mean.as_secs_f64())
            }
            _ => "-".to_owned(),
        }
    }

    /// `per_sec` against pgbench's TPS with `clients` clients, e.g. "0.42× (1 client)".
    pub fn rate_ratio(&self, per_sec: f64, clients: usize) -> String {
        match self.at(clients) {
            Some(r) if r.tps > 0.0 => format!(
                "{}× of {} TPS ({} client{})",
                ratio(per_sec / r.tps),
                crate::report::thousands(r.tps.round() as u64),
                clients,
                if clients == 1 { "" } else { "s" }
            ),
            _ => "-".to_owned(),
        }
    }
}

/// Two significant digits at most: 0.42, 0.042, 0.0042.
pub fn ratio(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.0}")
    } else if x >= 1.0 {
        format!("{x:.1}")
    } else if x >= 0.1 {
        format!("{x:.2}")
    } else if x >= 0.01 {
        format!("{x:.3}")
    } else {
        format!("{x:.4}")
    }
}

/// Creates the reference table and runs pgbench once per client count.
pub async fn run(server: &Server, clients: &[usize], secs: u32) -> Result<References> {
    let url = server.create(DATABASE).await?;
    server::execute(
        &url,
        "CREATE TABLE reference_inserts (
             id bigserial PRIMARY KEY,
             payload text NOT NULL,
             at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let pgbench = server.local.bin_dir().join("pgbench");
    if !pgbench.is_file() {
        bail!("pgbench not found next to the server binaries ({})", pgbench.display());
    }
    let port = server.local.port();
    let mut runs = Vec::new();
    for &n in clients {
        let pgbench = pgbench.clone();
        let run = tokio::task::spawn_blocking(move || run_once(&pgbench, port, n, secs))
            .await
            .context("the pgbench task failed")??;
        runs.push(run);
    }
    Ok(References { runs })
}

fn run_once(pgbench: &Path, port: u16, clients: usize, secs: u32) -> Result<Reference> {
    let dir = ScratchDir::create(&format!("poolkeeper-pgbench-{}-{clients}", std::process::id()))?;
    let script = dir.path.join("insert.sql");
    std::fs::write(&script, SCRIPT).context("write the pgbench script")?;
    let threads = clients.min(std::thread::available_parallelism().map_or(1, |n| n.get()));
    let prefix = dir.path.join("txn");
    let args: Vec<String> = vec![
        "-n".into(),
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-U".into(),
        "postgres".into(),
        "-c".into(),
        clients.to_string(),
        "-j".into(),
        threads.to_string(),
        "-T".into(),
        secs.to_string(),
        "-l".into(),
        format!("--log-prefix={}", prefix.display()),
        "-f".into(),
        script.display().to_string(),
        DATABASE.into(),
    ];
    let output =
        Command::new(pgbench).args(&args).output().context("run pgbench (is it installed?)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let tps = stdout
        .lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .with_context(|| format!("no tps in pgbench's output: {stdout}"))?;
    let mut latencies = read_latencies(&dir.path)?;
    if latencies.is_empty() {
        bail!("pgbench logged no transaction");
    }
    let mean = latencies.iter().sum::<Duration>() / u32::try_from(latencies.len())?;
    let p50 = percentile(&mut latencies, 0.50);
    let p99 = percentile(&mut latencies, 0.99);
    let command = format!(
        "pgbench -n -h 127.0.0.1 -p PORT -U postgres -c {clients} -j {threads} -T {secs} -l \
         -f insert.sql {DATABASE}  # insert.sql: {}",
        SCRIPT.trim()
    );
    Ok(Reference { clients, tps, p50, p99, mean, command })
}

/// Per-transaction latencies from pgbench's `-l` logs (third field, microseconds).
fn read_latencies(dir: &Path) -> Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(dir).context("list the pgbench logs")? {
        let path = entry.context("list the pgbench logs")?.path();
        let is_log =
            path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("txn"));
        if !is_log {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("read pgbench log {}", path.display()))?;
        for line in text.lines() {
            if let Some(micros) = line.split_whitespace().nth(2).and_then(|f| f.parse::<u64>().ok())
            {
                latencies.push(Duration::from_micros(micros));
            }
        }
    }
    Ok(latencies)
}

/// A directory under the system temporary directory, removed on drop.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn create(name: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(name);
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("remove stale {}", path.display()))?;
        }
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Best effort: a leftover scratch directory is harmless.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
