//! Leadership: a session-level advisory lock held on a dedicated connection.
//!
//! Why not a transaction-scoped lock per cycle: the cycle writes on other (pooled)
//! connections, so the lock would have to be held by a transaction sitting idle while
//! those writes happen, which DESIGN.md rules out. A session lock on a connection of its
//! own holds no transaction open; it is released by PostgreSQL when that connection dies,
//! so a crashed or partitioned leader hands over without any timeout of ours. The holder
//! checks the connection at the start of every cycle and, if it broke, drops it (losing
//! leadership) and tries again.

use std::time::Duration;

use diesel::sql_types::{BigInt, Bool};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::DaemonError;

/// Lock keys, one per loop, so the two loops can be led by different replicas.
pub const PREBUILDS_LOCK_KEY: i64 = 0x706f_6f6c_0000_0001;
pub const LIFECYCLE_LOCK_KEY: i64 = 0x706f_6f6c_0000_0002;

/// Bound on opening a connection: an unreachable host must not stall a loop.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a dedicated connection (outside the pool: it carries session state).
pub(crate) async fn connect(url: &str) -> Result<AsyncPgConnection, DaemonError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, AsyncPgConnection::establish(url)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(DaemonError::Connect(diesel::ConnectionError::BadConnection(format!(
            "no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        )))),
    }
}

#[derive(diesel::QueryableByName)]
struct Acquired {
    #[diesel(sql_type = Bool)]
    acquired: bool,
}

pub struct Leadership {
    url: String,
    key: i64,
    conn: Option<AsyncPgConnection>,
    held: bool,
}

impl Leadership {
    pub fn new(url: impl Into<String>, key: i64) -> Self {
        Self { url: url.into(), key, conn: None, held: false }
    }

    /// True when this replica leads the loop; tries to become leader if it does not.
    pub async fn is_leader(&mut self) -> Result<bool, DaemonError> {
        let result = self.check().await;
        if result.is_err() {
            // A broken connection has lost its session lock with it.
            self.conn = None;
            self.held = false;
        }
        result
    }

    async fn check(&mut self) -> Result<bool, DaemonError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(connect(&self.url).await?),
        };
        if self.held {
            diesel::sql_query("SELECT 1").execute(conn).await?;
            return Ok(true);
        }
        let row: Acquired = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS acquired")
            .bind::<BigInt, _>(self.key)
            .get_result(conn)
            .await?;
        if row.acquired {
            tracing::info!(key = self.key, "became leader");
        }
        self.held = row.acquired;
        Ok(row.acquired)
    }
}
