//! The prebuild plan: docs/replay-format.md output `prebuilds[]`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::PresetStatus;

/// Counters describing a preset's pool at `now`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresetState {
    pub desired: u32,
    pub actual: u32,
    pub eligible: u32,
    pub extraneous: u32,
    pub expired: u32,
    pub starting: u32,
    pub stopping: u32,
    pub deleting: u32,
}

/// One step of a preset's plan, applied in list order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    Backoff { until: DateTime<Utc> },
    CancelPending,
    Delete { workspace_ids: Vec<Uuid> },
    Create { count: u32 },
    SetStatus { status: PresetStatus },
}

/// Explanation (not in docs/replay-format.md's contract, which allows extra fields): creates the preset
/// needed but did not get this cycle, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withheld {
    /// How many creates were needed but not planned.
    pub count: u32,
    pub reasons: Vec<WithheldReason>,
}

/// Why creates were withheld (rules §4 actions 3 and 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WithheldReason {
    Backoff,
    HardLimited,
    ValidationFailed,
    /// `max_pending_creates_per_preset` capped the count.
    PendingCap,
}
