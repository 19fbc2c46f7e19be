//! The private PostgreSQL server of the run: a migrated template database that every
//! scenario's database is cloned from, plus small SQL helpers.

use anyhow::{Context, Result};
use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use poolkeeper::db::local_server::LocalServer;
use poolkeeper::db::migrate;
use poolkeeper::db::pool::{self, DbPool, PoolConfig};

const TEMPLATE: &str = "bench_template";

pub struct Server {
    pub local: LocalServer,
}

impl Server {
    /// Starts the server and builds the migrated template database.
    pub async fn start() -> Result<Self> {
        let local = tokio::task::spawn_blocking(LocalServer::start)
            .await
            .context("the server start task failed")?
            .context("cannot start a local PostgreSQL")?;
        let mut admin = connect(&local.admin_url()).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {TEMPLATE}"))
            .await
            .context("create the template database")?;
        let url = local.url(TEMPLATE);
        tokio::task::spawn_blocking(move || migrate::run_pending(&url))
            .await
            .context("the migration task failed")?
            .context("migrate the template database")?;
        Ok(Self { local })
    }

    /// A fresh, migrated, empty database `name`; returns its URL.
    pub async fn create(&self, name: &str) -> Result<String> {
        self.clone_of(TEMPLATE, name).await
    }

    /// A copy of database `source` (nobody may be connected to it) named `name`.
    pub async fn clone_of(&self, source: &str, name: &str) -> Result<String> {
        let mut admin = connect(&self.local.admin_url()).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {source}"))
            .await
            .with_context(|| format!("create database {name} from {source}"))?;
        Ok(self.local.url(name))
    }

    /// Drops `name`, disconnecting whoever is still connected.
    pub async fn drop_db(&self, name: &str) -> Result<()> {
        let mut admin = connect(&self.local.admin_url()).await?;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .with_context(|| format!("drop database {name}"))
    }
}

pub async fn connect(url: &str) -> Result<AsyncPgConnection> {
    AsyncPgConnection::establish(url).await.with_context(|| format!("connect to {url}"))
}

pub fn pool(url: &str, max_size: usize) -> Result<DbPool> {
    let config = PoolConfig {
        max_size,
        connect_timeout: std::time::Duration::from_secs(30),
        // Seeding a million rows may take longer than any production statement.
        session: poolkeeper::db::pool::SessionSettings {
            statement_timeout: std::time::Duration::ZERO,
            ..poolkeeper::db::pool::SessionSettings::for_role("bench")
        },
    };
    pool::build(url, &config).context("build a connection pool")
}

/// Runs `sql` (several statements allowed) on a connection of its own.
pub async fn execute(url: &str, sql: &str) -> Result<()> {
    let mut conn = connect(url).await?;
    conn.batch_execute(sql).await.with_context(|| format!("run SQL: {}", first_line(sql)))
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The single `bigint` column `n` of `sql`'s single row.
pub async fn count(conn: &mut AsyncPgConnection, sql: &str) -> Result<i64> {
    let row: Count = diesel::sql_query(sql)
        .get_result(conn)
        .await
        .with_context(|| format!("run SQL: {}", first_line(sql)))?;
    Ok(row.n)
}

fn first_line(sql: &str) -> &str {
    sql.trim().lines().next().unwrap_or_default()
}
