//! The daemon's error type.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot connect to the database: {0}")]
    Connect(#[from] diesel::ConnectionError),
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("the {loop_name} lease was not renewed within {after:?}")]
    LeaseTimeout { loop_name: &'static str, after: std::time::Duration },
    #[error("the {loop_name} cycle did not finish within {after:?}")]
    CycleTimeout { loop_name: &'static str, after: std::time::Duration },
    #[error("flight recorder: {0}")]
    Record(#[from] std::io::Error),
}

impl DaemonError {
    /// Short stable label (a metric label, a log field).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Store(err) => err.label(),
            Self::Connect(_) => "connect",
            Self::Query(_) => "query",
            Self::LeaseTimeout { .. } => "lease_timeout",
            Self::CycleTimeout { .. } => "cycle_timeout",
            Self::Record(_) => "record",
        }
    }
}
