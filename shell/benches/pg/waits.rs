//! `--profile`: samples `pg_stat_activity` while a phase runs and summarizes what the
//! phase's server processes were doing (running, or waiting and on what). Tells lock waits
//! from CPU from round trips (a backend `idle` or `idle in transaction` waits on the client).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::server::{self, Server};

const INTERVAL: Duration = Duration::from_millis(20);

#[derive(diesel::QueryableByName)]
struct Sample {
    #[diesel(sql_type = Text)]
    what: String,
}

pub struct Sampler {
    stop: CancellationToken,
    task: JoinHandle<Result<BTreeMap<String, u64>>>,
}

impl Sampler {
    /// A sampler of database `dbname` when `profile` is set.
    pub async fn maybe(profile: bool, server: &Server, dbname: &str) -> Result<Option<Self>> {
        if !profile {
            return Ok(None);
        }
        Ok(Some(Self::start(&server.local.admin_url(), dbname).await?))
    }

    /// Samples the backends connected to database `dbname` (the sampler's own excluded).
    pub async fn start(url: &str, dbname: &str) -> Result<Self> {
        let mut conn = server::connect(url).await?;
        let stop = CancellationToken::new();
        let token = stop.clone();
        let sql = format!(
            "SELECT CASE
                 WHEN state = 'active' AND wait_event IS NULL THEN 'active (on CPU)'
                 WHEN state = 'active' THEN 'active, waiting: ' || wait_event_type || '/' || wait_event
                 ELSE coalesce(state, 'unknown') END AS what
             FROM pg_stat_activity
             WHERE datname = '{dbname}' AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        );
        let task = tokio::spawn(async move {
            let mut seen: BTreeMap<String, u64> = BTreeMap::new();
            while !token.is_cancelled() {
                let rows: Vec<Sample> = diesel::sql_query(&sql).load(&mut conn).await?;
                for row in rows {
                    *seen.entry(row.what).or_default() += 1;
                }
                tokio::select! {
                    () = token.cancelled() => {}
                    () = tokio::time::sleep(INTERVAL) => {}
                }
            }
            Ok(seen)
        });
        Ok(Self { stop, task })
    }

    /// Stops sampling; returns "what: share of samples" lines, most frequent first.
    pub async fn finish(self) -> Result<String> {
        self.stop.cancel();
        let seen = self.task.await??;
        let total: u64 = seen.values().sum();
        let mut entries: Vec<(String, u64)> = seen.into_iter().collect();
        entries.sort_by_key(|entry| std::cmp::Reverse(entry.1));
        let parts: Vec<String> = entries
            .iter()
            .take(6)
            .map(|(what, n)| format!("{what} {:.0}%", *n as f64 * 100.0 / total.max(1) as f64))
            .collect();
        Ok(parts.join(", "))
    }
}
