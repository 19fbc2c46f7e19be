//! The connection pool (diesel-async over deadpool) with bounded waits: a database that
//! is down makes callers fail after `connect_timeout`, never hang.

use std::time::Duration;

use deadpool::managed::{Hook, HookError, Metrics, QueueMode};
use deadpool::Runtime;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use futures_util::FutureExt;

use super::tls::ConnectSpec;

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

/// Connections of a pool unless configured (`--pool-size`): the API's, and each loop's.
pub const DEFAULT_POOL_SIZE: usize = 10;

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_size: DEFAULT_POOL_SIZE,
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
    /// JIT compilation is turned off: poolkeeper's statements are short or index-driven, and
    /// compiling the lifecycle snapshot's plan (100,000 rows of index lookups) took about
    /// 240 ms, longer than anything it could save.
    fn statements(&self) -> String {
        let name = self.application_name.replace('\'', "''");
        format!(
            "SET application_name = '{name}'; SET statement_timeout = {}; \
             SET lock_timeout = {}; SET idle_in_transaction_session_timeout = {}; \
             SET jit = off;",
            self.statement_timeout.as_millis(),
            self.lock_timeout.as_millis(),
            self.idle_in_transaction_timeout.as_millis()
        )
    }
}

/// Opens one connection with `session` applied: every connection of the pools, the leader
/// and LISTEN connections and the migrations. TLS as the URL's `sslmode` and `sslrootcert`
/// say (see [`super::tls`]).
pub async fn establish(
    url: &str,
    session: &SessionSettings,
) -> Result<AsyncPgConnection, diesel::ConnectionError> {
    let spec = ConnectSpec::parse(url)
        .map_err(|err| diesel::ConnectionError::InvalidConnectionUrl(err.to_string()))?;
    tracing::trace!(database = %redacted_url(url), sslmode = %spec.mode(), "connecting");
    let mut conn = spec.connect().await?;
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
    // The test query runs only on connections idle a while (`verify_if_idle`), not on every
    // checkout; a connection found broken (closed, or left in a transaction) is still dropped.
    manager_config.recycling_method = RecyclingMethod::Fast;
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
        // The connection returned last is handed out first: busy paths (a claim batch, a
        // worker) keep reusing a few connections whose statements are prepared and whose
        // caches are warm, rather than cycling through every idle one.
        .queue_mode(QueueMode::Lifo)
        .pre_recycle(verify_if_idle(config.connect_timeout))
        .build()?;
    Ok(pool)
}

/// A connection handed back within this long is handed out again without a test query, as
/// connection pools commonly do (HikariCP's "alive bypass window"): on a busy path the test
/// query was a round trip for every statement's checkout, a third of a claim's. One idle
/// longer (the server may have closed it meanwhile) is tested first.
const VERIFY_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Tests a connection idle for `VERIFY_AFTER_IDLE` or more with `SELECT 1`, within
/// `timeout`; one that fails is dropped and the checkout takes another.
fn verify_if_idle(timeout: Duration) -> Hook<AsyncDieselConnectionManager<AsyncPgConnection>> {
    Hook::async_fn(move |conn: &mut AsyncPgConnection, metrics: &Metrics| {
        Box::pin(async move {
            if metrics.last_used() < VERIFY_AFTER_IDLE {
                return Ok(());
            }
            match tokio::time::timeout(timeout, conn.batch_execute("SELECT 1")).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => {
                    Err(HookError::Message(format!("an idle connection failed: {err}").into()))
                }
                Err(_) => Err(HookError::Message("an idle connection did not answer".into())),
            }
        })
    })
}

/// [`build`], then check out one connection, so that a wrong URL or a database that is down
/// is reported now rather than at the first query.
pub async fn connect(url: &str, config: &PoolConfig) -> Result<DbPool, PoolError> {
    let pool = build(url, config)?;
    drop(pool.get().await?);
    Ok(pool)
}

/// `url` without its user and password, for messages and logs:
/// `postgres://u:secret@db:5432/pk` → `postgres://db:5432/pk`; a password given as a query
/// parameter (`?password=`, `?sslpassword=`) is dropped too.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // libpq's `key=value` form: drop the password pairs.
        return url
            .split_whitespace()
            .filter(|pair| !pair.starts_with("password=") && !pair.starts_with("sslpassword="))
            .collect::<Vec<_>>()
            .join(" ");
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let rest = match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    let rest = match rest.split_once('?') {
        Some((base, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| {
                    let key = pair.split_once('=').map_or(*pair, |(key, _)| key);
                    !matches!(key, "password" | "sslpassword")
                })
                .collect();
            if kept.is_empty() {
                base.to_owned()
            } else {
                format!("{base}?{}", kept.join("&"))
            }
        }
        None => rest.to_owned(),
    };
    format!("{scheme}://{rest}")
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
            ("postgres://db/pk?password=secret", "postgres://db/pk"),
            (
                "postgres://u@db/pk?sslmode=require&password=secret&application_name=a",
                "postgres://db/pk?sslmode=require&application_name=a",
            ),
            (
                "postgres://db/pk?sslpassword=secret&sslmode=verify-full",
                "postgres://db/pk?sslmode=verify-full",
            ),
            ("postgres://u:secret@db?password=secret", "postgres://db"),
            ("host=db password=secret dbname=pk", "host=db dbname=pk"),
        ];
        for (url, expected) in cases {
            assert_eq!(redacted_url(url), expected, "{url}");
        }
    }
}
