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
    /// The job's workspace changed owner between the completion's read and its write
    /// (the transaction is retried, and decides the end again).
    #[error("job {job_id}'s workspace changed hands while its completion was written")]
    CompletionRaced { job_id: uuid::Uuid },
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
            Self::CompletionRaced { .. } => "completion_raced",
            Self::Backend(err) => err.label(),
        }
    }

    /// True for trouble reaching the database (a lost connection, a pool timeout, a server
    /// restarting), which a retry may cure; false when the job itself is at fault (its build
    /// is missing) or a statement was refused. Only the latter may fail a job.
    pub fn is_transient(&self) -> bool {
        use diesel::result::{DatabaseErrorKind as Kind, Error as Db};
        match self {
            Self::Connect(_) | Self::Pool(_) | Self::CompletionRaced { .. } => true,
            Self::Database(err) => match err {
                Db::DatabaseError(kind, _) => matches!(
                    kind,
                    Kind::UnableToSendCommand
                        | Kind::ClosedConnection
                        | Kind::SerializationFailure
                        // Server-side trouble (shutdown, too many connections, ...) is
                        // reported as Unknown: retrying is harmless, failing is not.
                        | Kind::Unknown
                ),
                Db::BrokenTransactionManager | Db::RollbackErrorOnCommit { .. } => true,
                _ => false,
            },
            Self::MissingBuild { .. } | Self::Backend(_) => false,
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
    /// Terraform succeeded but its state cannot be read: the build must not be recorded as
    /// succeeded with the previous build's state.
    #[error("cannot read the state file {path}: {source}")]
    StateUnreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A failure read back from the spool (its text as recorded when the build ended).
    #[error("{0}")]
    Spooled(String),
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
            Self::StateUnreadable { .. } => "state_unreadable",
            Self::Spooled(_) => "spooled",
        }
    }
}
