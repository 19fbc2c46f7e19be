//! Per-test databases, after crates.io's test-db crate: one [`LocalServer`] per test
//! process, migrated once into a template database; every [`TestDatabase`] is a fresh clone
//! of it (`CREATE DATABASE ... TEMPLATE`, milliseconds). Tests are isolated and run in
//! parallel; nothing is cleaned up per test, the server dies with the process.
//!
//! Works under `cargo test` (many tests, threads, one tokio runtime each) and nextest (one
//! process per test). The process-wide state holds no pool or connection, since those are
//! bound to the runtime that created them; each `TestDatabase` builds its own pool.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use diesel::Connection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::local_server::LocalServer;
use super::migrate;
use super::pool::{self, DbConn, DbPool, PoolConfig, SessionSettings};

/// The migrated database every test database is cloned from.
pub const TEMPLATE_DATABASE: &str = "poolkeeper_template";

/// A synchronous diesel connection (for the one-off setup, outside any runtime).
type BlockingPgConnection = AsyncConnectionWrapper<AsyncPgConnection>;

static SERVER: OnceLock<Result<LocalServer, String>> = OnceLock::new();
static NEXT_DATABASE: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, thiserror::Error)]
pub enum TestDbError {
    /// Starting or migrating the shared server failed; every test of the process sees it.
    #[error("cannot set up the test PostgreSQL server: {0}")]
    Setup(String),
    #[error("cannot connect to the test PostgreSQL server: {0}")]
    Connect(#[from] diesel::ConnectionError),
    #[error("cannot create test database {name}: {source}")]
    Create {
        name: String,
        #[source]
        source: diesel::result::Error,
    },
    #[error(transparent)]
    Pool(#[from] pool::PoolError),
}

/// A database of its own for one test. Dropping it leaves the database behind (the whole
/// server is discarded with the test process).
pub struct TestDatabase {
    name: String,
    url: String,
    pool: DbPool,
}

impl TestDatabase {
    /// A fresh, fully migrated database. Panics with the reason if that is impossible (a
    /// test cannot proceed anyway); see [`TestDatabase::try_new`].
    pub async fn new() -> Self {
        match Self::try_new().await {
            Ok(db) => db,
            Err(err) => panic!("{err}"),
        }
    }

    pub async fn try_new() -> Result<Self, TestDbError> {
        Self::create(TEMPLATE_DATABASE).await
    }

    /// A fresh database without any migration applied (for the migration tests).
    pub async fn empty() -> Self {
        match Self::create("template0").await {
            Ok(db) => db,
            Err(err) => panic!("{err}"),
        }
    }

    /// The process's shared server (started on first use).
    pub async fn server() -> Result<&'static LocalServer, TestDbError> {
        if let Some(server) = SERVER.get() {
            return server.as_ref().map_err(|err| TestDbError::Setup(err.clone()));
        }
        // Startup blocks for about a second: keep it off the async worker thread.
        let server = tokio::task::spawn_blocking(|| SERVER.get_or_init(start_server))
            .await
            .map_err(|err| TestDbError::Setup(format!("setup task failed: {err}")))?;
        server.as_ref().map_err(|err| TestDbError::Setup(err.clone()))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `postgres://...` URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A pool bound to the runtime of the test that created this database.
    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// A connection from [`TestDatabase::pool`]; panics if there is none.
    pub async fn conn(&self) -> DbConn {
        match self.pool.get().await {
            Ok(conn) => conn,
            Err(err) => panic!("cannot get a connection to test database {}: {err}", self.name),
        }
    }

    async fn create(template: &str) -> Result<Self, TestDbError> {
        let server = Self::server().await?;
        let name = format!("test_{}", NEXT_DATABASE.fetch_add(1, Ordering::Relaxed));
        let mut admin = AsyncPgConnection::establish(&server.admin_url()).await?;
        diesel::sql_query(format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .execute(&mut admin)
            .await
            .map_err(|source| TestDbError::Create { name: name.clone(), source })?;
        drop(admin);
        let url = server.url(&name);
        let pool = pool::build(
            &url,
            &PoolConfig {
                max_size: 8,
                connect_timeout: Duration::from_secs(10),
                session: SessionSettings::for_role("test"),
            },
        )?;
        Ok(Self { name, url, pool })
    }
}

/// Start the server and build the template database; the error is kept as text so that
/// every test of the process reports it.
fn start_server() -> Result<LocalServer, String> {
    // A thread of its own: no tokio context there, so diesel-async's blocking wrapper (used
    // for the setup statements and by the migrations) runs on a runtime of its own.
    std::thread::spawn(|| {
        let server = LocalServer::start().map_err(|err| err.to_string())?;
        build_template(&server).map_err(|err| format!("template database: {err}"))?;
        Ok(server)
    })
    .join()
    .map_err(|_| "the setup thread panicked".to_owned())?
}

fn build_template(server: &LocalServer) -> Result<(), Box<dyn std::error::Error>> {
    let mut admin = <BlockingPgConnection as Connection>::establish(&server.admin_url())?;
    diesel::RunQueryDsl::execute(
        diesel::sql_query(format!("CREATE DATABASE {TEMPLATE_DATABASE}")),
        &mut admin,
    )?;
    migrate::run_pending(&server.url(TEMPLATE_DATABASE))?;
    // Cloning needs a template nobody is connected to: refuse connections from now on.
    diesel::RunQueryDsl::execute(
        diesel::sql_query(format!(
            "ALTER DATABASE {TEMPLATE_DATABASE} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
        )),
        &mut admin,
    )?;
    Ok(())
}
