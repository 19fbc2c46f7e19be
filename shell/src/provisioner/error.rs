//! The provisioner's errors: database trouble (retried by the worker loop) and backend
//! failures (they end the job as failed, the worker keeps running).

#[derive(Debug, thiserror::Error)]
pub enum ProvisionerError {
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
    #[error("cannot connect to the database: {0}")]
    Connect(#[from] diesel::ConnectionError),
    #[error(transparent)]
    Pool(#[from] crate::db::pool::PoolError),
    #[error("job {job_id} has no workspace build")]
    MissingBuild { job_id: uuid::Uuid },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for ProvisionerError {
    fn from(err: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        Self::Pool(crate::db::pool::PoolError::Checkout(err))
    }
}

impl ProvisionerError {
    /// Short stable label (a metric label, a log field).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Database(_) => "database",
            Self::Connect(_) => "connect",
            Self::Pool(err) => err.label(),
            Self::MissingBuild { .. } => "missing_build",
            Self::Backend(err) => err.label(),
        }
    }
}

/// Why a backend could not build; the text is kept in the job's `error` column.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("invalid template version source: {0}")]
    InvalidSource(String),
    #[error("simulated failure (seed {seed}, failure rate {rate})")]
    SimulatedFailure { seed: u64, rate: f64 },
    #[error("terraform binary {bin:?} not found or not executable: {source}")]
    TerraformMissing {
        bin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("terraform {step} failed ({status}): {stderr}")]
    TerraformStep { step: &'static str, status: String, stderr: String },
    #[error("workspace directory {path}: {source}")]
    WorkDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the job was canceled")]
    Canceled,
}

impl BackendError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::InvalidSource(_) => "invalid_source",
            Self::SimulatedFailure { .. } => "simulated_failure",
            Self::TerraformMissing { .. } => "terraform_missing",
            Self::TerraformStep { .. } => "terraform_step",
            Self::WorkDir { .. } => "work_dir",
            Self::Canceled => "canceled",
        }
    }
}
