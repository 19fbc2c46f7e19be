//! The connection pool (diesel-async over deadpool) with bounded waits: a database that
//! is down makes callers fail after `connect_timeout`, never hang.

use std::time::Duration;

use deadpool::Runtime;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::FutureExt;

/// A pool of PostgreSQL connections. Cheap to clone; bound to the tokio runtime that uses it
/// (its connections' I/O tasks live there), so never keep one in a `static`.
pub type DbPool = Pool<AsyncPgConnection>;

/// A connection checked out of a [`DbPool`]; returned to the pool on drop.
pub type DbConn = Object<AsyncPgConnection>;

#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Maximum number of open connections.
    pub max_size: usize,
    /// Bound on opening one connection, and on waiting for a free one.
    pub connect_timeout: Duration,
    /// Set on every connection the pool opens.
    pub session: SessionSettings,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_size: 10,
            connect_timeout: Duration::from_secs(5),
            session: SessionSettings::default(),
        }
    }
}

/// Who a connection is (`application_name`, shown in `pg_stat_activity`) and the server-side
/// bounds on what it does: no statement, lock wait or idle open transaction lasts forever.
/// A zero duration means no bound (PostgreSQL's own meaning of 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettings {
    pub application_name: String,
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
    pub idle_in_transaction_timeout: Duration,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            application_name: "poolkeeper".to_owned(),
            statement_timeout: Duration::from_secs(60),
            lock_timeout: Duration::from_secs(10),
            idle_in_transaction_timeout: Duration::from_secs(60),
        }
    }
}

impl SessionSettings {
    /// The defaults, named `poolkeeper-{role}` (`prebuilds`, `lifecycle`, `api`,
    /// `provisioner`, ...).
    pub fn for_role(role: &str) -> Self {
        Self { application_name: format!("poolkeeper-{role}"), ..Self::default() }
    }

    /// The `SET` statements of these settings, one batch (one round trip per connection).
    fn statements(&self) -> String {
        let name = self.application_name.replace('\'', "''");
        format!(
            "SET application_name = '{name}'; SET statement_timeout = {}; \
             SET lock_timeout = {}; SET idle_in_transaction_session_timeout = {};",
            self.statement_timeout.as_millis(),
            self.lock_timeout.as_millis(),
            self.idle_in_transaction_timeout.as_millis()
        )
    }
}

/// Opens one connection outside any pool (leadership, LISTEN) with `session` applied.
pub async fn establish(
    url: &str,
    session: &SessionSettings,
) -> Result<AsyncPgConnection, diesel::ConnectionError> {
    let mut conn = AsyncPgConnection::establish(url).await?;
    conn.batch_execute(&session.statements())
        .await
        .map_err(|err| diesel::ConnectionError::BadConnection(err.to_string()))?;
    Ok(conn)
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("invalid connection pool configuration: {0}")]
    Build(#[from] diesel_async::pooled_connection::deadpool::BuildError),
    #[error("cannot get a database connection: {0}")]
    Checkout(#[from] diesel_async::pooled_connection::deadpool::PoolError),
}

impl PoolError {
    /// Short stable label (a metric label, a log field).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Build(_) => "pool_build",
            Self::Checkout(_) => "pool_checkout",
        }
    }
}

/// A pool for `url` (`postgres://user@host:port/dbname`). Lazy: no connection is opened
/// until the first checkout, so this succeeds while the database is down. Must be called
/// inside a tokio runtime (the timeouts use its timer).
pub fn build(url: &str, config: &PoolConfig) -> Result<DbPool, PoolError> {
    let mut manager_config = ManagerConfig::default();
    let session = config.session.clone();
    manager_config.custom_setup = Box::new(move |url| {
        let session = session.clone();
        let url = url.to_owned();
        async move { establish(&url, &session).await }.boxed()
    });
    let manager =
        AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, manager_config);
    let pool = Pool::builder(manager)
        .max_size(config.max_size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(config.connect_timeout))
        .wait_timeout(Some(config.connect_timeout))
        .recycle_timeout(Some(config.connect_timeout))
        .build()?;
    Ok(pool)
}

/// [`build`], then check out one connection, so that a wrong URL or a database that is down
/// is reported now rather than at the first query.
pub async fn connect(url: &str, config: &PoolConfig) -> Result<DbPool, PoolError> {
    let pool = build(url, config)?;
    drop(pool.get().await?);
    Ok(pool)
}

/// `url` without its user and password, for messages and logs:
/// `postgres://u:secret@db:5432/pk` → `postgres://db:5432/pk`.
pub fn redacted_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let rest = match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    if scheme.is_empty() {
        rest.to_owned()
    } else {
        format!("{scheme}://{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::redacted_url;

    #[test]
    fn redacted_url_drops_credentials_only() {
        let cases = [
            ("postgres://u:secret@db:5432/pk", "postgres://db:5432/pk"),
            (
                "postgres://u@127.0.0.1/pk?sslmode=disable",
                "postgres://127.0.0.1/pk?sslmode=disable",
            ),
            ("postgres://db/pk", "postgres://db/pk"),
            ("postgres://u:p@ss@db/pk", "postgres://db/pk"),
            ("postgresql://db", "postgresql://db"),
        ];
        for (url, expected) in cases {
            assert_eq!(redacted_url(url), expected, "{url}");
        }
    }
}
