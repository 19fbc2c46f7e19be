//! The store's error type.

use crate::db::pool::PoolError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// A write made under leadership found the lease gone or taken over: nothing written.
    #[error("not written: the {loop_name} lease (token {token}) is no longer held")]
    Fenced { loop_name: &'static str, token: i64 },
}

impl StoreError {
    /// Short stable label (a metric label, a log field).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Pool(err) => err.label(),
            Self::Query(_) => "query",
            Self::Fenced { .. } => "fenced",
        }
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for StoreError {
    fn from(err: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        Self::Pool(PoolError::Checkout(err))
    }
}
