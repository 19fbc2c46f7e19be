//! The migrations of `migrations/`, embedded in the binary, and running them.
//!
//! diesel's migration harness is synchronous; diesel-async's `AsyncConnectionWrapper` blocks
//! on a runtime of its own when it finds none on the current thread. So every entry point
//! runs the harness on a dedicated thread: callable from plain `main`, from a test, or
//! (via `spawn_blocking`) from async code, on any runtime flavour.
//!
//! The connection is opened like every other one ([`pool::establish`], so with the URL's TLS
//! settings) on a one-worker runtime that keeps driving its I/O while the harness blocks.

use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::RunQueryDsl;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::pool::{self, SessionSettings};

/// All migrations, in order.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// Session advisory lock held while migrating, so that replicas starting together migrate
/// one after the other instead of racing on the same DDL.
const MIGRATION_LOCK_KEY: i64 = 0x706f_6f6c_6d69_6772; // "poolmigr"

type MigrationConnection = AsyncConnectionWrapper<AsyncPgConnection>;
type HarnessError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot connect to the database: {0}")]
    Connect(#[from] diesel::ConnectionError),
    #[error("cannot take the migration lock: {0}")]
    Lock(#[source] diesel::result::Error),
    #[error("migration failed: {0}")]
    Migration(#[source] HarnessError),
    #[error("cannot start the migration runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the migration thread panicked")]
    Panicked,
}

impl MigrateError {
    /// Short stable label (a metric label, a log field).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Connect(_) => "migrate_connect",
            Self::Lock(_) => "migrate_lock",
            Self::Migration(_) => "migrate_migration",
            Self::Runtime(_) => "migrate_runtime",
            Self::Panicked => "migrate_panicked",
        }
    }
}

/// Apply every pending migration; returns the versions applied (empty if up to date).
/// Blocks the calling thread.
pub fn run_pending(url: &str) -> Result<Vec<String>, MigrateError> {
    with_locked_connection(url, |conn| {
        let applied = conn.run_pending_migrations(MIGRATIONS)?;
        Ok(applied.iter().map(ToString::to_string).collect())
    })
}

/// Revert every applied migration, newest first; returns the versions reverted. For
/// development and the migration tests: it drops all data. Blocks the calling thread.
pub fn revert_all(url: &str) -> Result<Vec<String>, MigrateError> {
    with_locked_connection(url, |conn| {
        let reverted = conn.revert_all_migrations(MIGRATIONS)?;
        Ok(reverted.iter().map(ToString::to_string).collect())
    })
}

/// The versions of all embedded migrations, oldest first.
pub fn known_versions() -> Result<Vec<String>, MigrateError> {
    let migrations =
        MigrationSource::<Pg>::migrations(&MIGRATIONS).map_err(MigrateError::Migration)?;
    Ok(migrations.iter().map(|m| m.name().version().to_string()).collect())
}

fn with_locked_connection<F>(url: &str, work: F) -> Result<Vec<String>, MigrateError>
where
    F: FnOnce(&mut MigrationConnection) -> Result<Vec<String>, HarnessError> + Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // Multi-threaded (one worker), so the connection's I/O task keeps running while
                // the harness blocks this thread on a runtime of its own.
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .map_err(MigrateError::Runtime)?;
                let session = SessionSettings {
                    // DDL may wait on locks and run long; the advisory lock serializes replicas.
                    statement_timeout: std::time::Duration::ZERO,
                    lock_timeout: std::time::Duration::ZERO,
                    idle_in_transaction_timeout: std::time::Duration::ZERO,
                    ..SessionSettings::for_role("migrate")
                };
                let conn = runtime.block_on(pool::establish(url, &session))?;
                let mut conn = MigrationConnection::from(conn);
                diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
                    .execute(&mut conn)
                    .map_err(MigrateError::Lock)?;
                // The lock is a session lock: closing the connection releases it, also on error.
                work(&mut conn).map_err(MigrateError::Migration)
            })
            .join()
            .map_err(|_| MigrateError::Panicked)?
    })
}
