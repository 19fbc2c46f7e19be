//! The migrations of `migrations/`, embedded in the binary, and running them.
//!
//! diesel's migration harness is synchronous; diesel-async's `AsyncConnectionWrapper` blocks
//! on a runtime of its own when it finds none on the current thread. So every entry point
//! runs the harness on a dedicated thread: callable from plain `main`, from a test, or
//! (via `spawn_blocking`) from async code, on any runtime flavour.

use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::{Connection, RunQueryDsl};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

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
                let mut conn = MigrationConnection::establish(url)?;
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
