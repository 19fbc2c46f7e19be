//! Leadership: an expiring lease per loop (`store::leases`), renewed at the start of every
//! cycle on a dedicated connection.
//!
//! Why not a session advisory lock (the first design): PostgreSQL releases such a lock only
//! when the session ends, and a leader whose database path hangs (a stuck proxy or pooler
//! keeps the TCP connection open) keeps its session, so no other replica could ever lead.
//! A lease runs out on the database's clock whatever the holder does. Every renewal is
//! bounded by a client-side timeout, after which the connection is dropped and the replica
//! counts itself a follower; writes carry the lease's [`Fence`] and are refused in their own
//! transaction once the lease has moved on, so a deposed leader's late writes do nothing.

use std::time::Duration;

use diesel_async::AsyncPgConnection;

use super::DaemonError;
use crate::db::pool::{self, SessionSettings};
use crate::store::leases::{self, Fence};

/// Lease names, one per loop, so the two loops can be led by different replicas.
pub const PREBUILDS_LEASE: &str = "prebuilds";
pub const LIFECYCLE_LEASE: &str = "lifecycle";
pub const RETENTION_LEASE: &str = "retention";

/// Bound on opening a connection: an unreachable host must not stall a loop.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The shortest lease: a renewal must fit in it several times over.
const MIN_LEASE: Duration = Duration::from_secs(6);

/// Opens a dedicated connection (outside the pool: a hung one is dropped, not recycled).
pub(crate) async fn connect(
    url: &str,
    session: &SessionSettings,
) -> Result<AsyncPgConnection, DaemonError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, pool::establish(url, session)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(DaemonError::Connect(diesel::ConnectionError::BadConnection(format!(
            "no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        )))),
    }
}

/// The lease that a loop's replicas share.
pub struct Leadership {
    url: String,
    loop_name: &'static str,
    /// This replica's name in `leader_leases.holder`: unique per process and loop.
    holder: String,
    ttl: Duration,
    session: SessionSettings,
    conn: Option<AsyncPgConnection>,
    fence: Option<Fence>,
}

impl Leadership {
    /// A follower of `loop_name` until its first [`Leadership::is_leader`].
    pub fn new(url: impl Into<String>, loop_name: &'static str) -> Self {
        Self {
            url: url.into(),
            loop_name,
            holder: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            ttl: Duration::from_secs(60),
            session: SessionSettings::for_role(loop_name),
            conn: None,
            fence: None,
        }
    }

    /// How long a lease lasts without renewal (at least 6 s). A loop renews it every cycle,
    /// so it must exceed the loop's interval plus a cycle's duration; a replica takes over
    /// at most this long after the leader's last renewal, plus one of its own intervals.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.max(MIN_LEASE);
        self
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The lease's fence while this replica leads.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    /// True when this replica leads the loop (renewing the lease, or taking over an expired
    /// one). Any failure, or no answer within a third of the lease, means "not leader".
    pub async fn is_leader(&mut self) -> Result<bool, DaemonError> {
        let bound = self.ttl / 3;
        let result = match tokio::time::timeout(bound, self.renew()).await {
            Ok(result) => result,
            Err(_) => Err(DaemonError::LeaseTimeout { loop_name: self.loop_name, after: bound }),
        };
        match result {
            Ok(fence) => {
                match (&self.fence, &fence) {
                    (None, Some(new)) => {
                        tracing::info!(lease = self.loop_name, token = new.token, "became leader")
                    }
                    (Some(old), None) => {
                        tracing::warn!(lease = self.loop_name, token = old.token, "lost leadership")
                    }
                    _ => {}
                }
                self.fence = fence;
                Ok(self.fence.is_some())
            }
            Err(err) => {
                // The connection may be stuck mid-statement: never reuse it.
                self.conn = None;
                if let Some(old) = self.fence.take() {
                    tracing::warn!(lease = self.loop_name, token = old.token, error = %err, "lost leadership");
                }
                Err(err)
            }
        }
    }

    async fn renew(&mut self) -> Result<Option<Fence>, DaemonError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(connect(&self.url, &self.session).await?),
        };
        Ok(leases::acquire_or_renew(conn, self.loop_name, &self.holder, self.ttl).await?)
    }

    /// Hands the lease over at once (graceful shutdown); best effort, bounded.
    pub async fn release(&mut self) {
        let (Some(fence), Some(conn)) = (self.fence.take(), self.conn.as_mut()) else { return };
        match tokio::time::timeout(self.ttl / 3, leases::release(conn, &fence)).await {
            Ok(Ok(())) => tracing::info!(lease = self.loop_name, "leadership released"),
            Ok(Err(err)) => tracing::warn!(error = %err, "cannot release the lease"),
            Err(_) => tracing::warn!("cannot release the lease: no answer"),
        }
    }
}
