//! Vocabulary shared by both loops: what a build does and where its job stands.

use serde::{Deserialize, Serialize};

/// What a workspace build does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transition {
    Start,
    Stop,
    Delete,
}

impl Transition {
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Start => "start",
            Transition::Stop => "stop",
            Transition::Delete => "delete",
        }
    }
}

impl std::str::FromStr for Transition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "start" => Ok(Transition::Start),
            "stop" => Ok(Transition::Stop),
            "delete" => Ok(Transition::Delete),
            other => Err(format!("unknown transition {other:?}")),
        }
    }
}

/// The status of a provisioner job: pending → running → succeeded / failed, or
/// canceling → canceled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Canceling,
    Canceled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Pending,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Canceling,
        JobStatus::Canceled,
    ];

    /// A build whose job is pending, running or canceling is still in flight.
    pub fn is_in_flight(self) -> bool {
        matches!(self, JobStatus::Pending | JobStatus::Running | JobStatus::Canceling)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Canceling => "canceling",
            JobStatus::Canceled => "canceled",
        }
    }
}

impl std::str::FromStr for JobStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown job status {s:?}"))
    }
}
