//! The prebuild snapshot: docs/replay-format.md `prebuilds` section.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::build::Transition;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrebuildSnapshot {
    pub config: ReconcilerConfig,
    pub presets: Vec<Preset>,
    pub running: Vec<RunningPrebuild>,
    pub in_progress: Vec<InProgressPrebuild>,
    pub recent_builds: Vec<RecentBuild>,
    /// Optional: prebuilds whose latest build is a failed start (rules §4 "Failed prebuilds").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<FailedPrebuild>,
    /// Optional: recent claims of autoscaled presets (rules §4 "Autoscale").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<Claim>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcilerConfig {
    pub backoff_interval_secs: u64,
    pub backoff_lookback_secs: u64,
    /// 0 disables the hard limit.
    pub failure_hard_limit: u32,
    /// 0 = no cap on creates in flight per preset.
    #[serde(default)]
    pub max_pending_creates_per_preset: u32,
    /// Failed prebuilds kept per preset for inspection, newest first (rules §4 "Failed
    /// prebuilds"). Optional; 3 when left out.
    #[serde(default = "default_failed_keep")]
    pub failed_keep: u32,
    /// A failed prebuild beyond the kept ones is deleted once it is older than this.
    /// Optional; 0, the default, never deletes one.
    #[serde(default)]
    pub failed_grace_secs: u64,
}

/// `failed_keep` of a replay file that leaves it out, and of `poolkeeper run`.
pub const DEFAULT_FAILED_KEEP: u32 = 3;

fn default_failed_keep() -> u32 {
    DEFAULT_FAILED_KEEP
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresetStatus {
    Healthy,
    HardLimited,
    ValidationFailed,
}

impl PresetStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PresetStatus::Healthy => "healthy",
            PresetStatus::HardLimited => "hard_limited",
            PresetStatus::ValidationFailed => "validation_failed",
        }
    }
}

impl std::str::FromStr for PresetStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "healthy" => Ok(PresetStatus::Healthy),
            "hard_limited" => Ok(PresetStatus::HardLimited),
            "validation_failed" => Ok(PresetStatus::ValidationFailed),
            other => Err(format!("unknown preset status {other:?}")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetSchedule {
    pub cron: String,
    pub instances: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub id: Uuid,
    pub name: String,
    pub template_id: Uuid,
    pub template_version_id: Uuid,
    pub using_active_version: bool,
    pub template_deleted: bool,
    pub template_deprecated: bool,
    /// The preset's base count, used outside every schedule window.
    pub desired_instances: u32,
    /// 0 = prebuilds never expire.
    pub expiration_ttl_secs: u64,
    pub scheduling_timezone: String,
    pub schedules: Vec<PresetSchedule>,
    /// Windows count as open this many seconds early (pre-warming).
    #[serde(default)]
    pub schedule_lead_secs: u64,
    /// Rows created before this instant are expired.
    #[serde(default)]
    pub invalidated_at: Option<DateTime<Utc>>,
    pub status: PresetStatus,
    /// Optional: the pool follows the demand (rules §4 "Autoscale").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<Autoscale>,
}

/// Demand-driven pool size: `clamp(ceil(claims in the last window × headroom), min, max)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autoscale {
    pub min: u32,
    pub max: u32,
    pub window_secs: u64,
    pub headroom: f64,
}

impl Autoscale {
    /// What the types cannot say: `min ≤ max`, a window, a finite headroom ≥ 0. Names the
    /// offending field.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max < self.min {
            return Err(("max", format!("{} is below min {}", self.max, self.min)));
        }
        if self.window_secs == 0 {
            return Err(("window_secs", "must be at least 1".to_owned()));
        }
        if !self.headroom.is_finite() || self.headroom < 0.0 {
            return Err(("headroom", format!("{} is not a finite number ≥ 0", self.headroom)));
        }
        Ok(())
    }
}

/// A claim of a preset: a user took one of its prebuilds, or got a fresh workspace of it when
/// none was ready. Either way it is demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    pub workspace_id: Uuid,
    pub preset_id: Uuid,
    pub at: DateTime<Utc>,
}

/// A prebuild whose latest build is a succeeded start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunningPrebuild {
    pub workspace_id: Uuid,
    pub preset_id: Uuid,
    pub template_version_id: Uuid,
    pub created_at: DateTime<Utc>,
    /// Every agent of the latest build reported ready.
    pub ready: bool,
}

/// The status of a job that has not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InFlightStatus {
    Pending,
    Running,
    Canceling,
}

/// A prebuild whose latest build's job is not finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InProgressPrebuild {
    pub workspace_id: Uuid,
    pub preset_id: Uuid,
    pub template_version_id: Uuid,
    pub transition: Transition,
    pub job_status: InFlightStatus,
    pub build_number: u32,
}

/// The status of a job that has finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishedStatus {
    Succeeded,
    Failed,
    Canceled,
}

/// The latest finished start build of a prebuild workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecentBuild {
    pub workspace_id: Uuid,
    pub preset_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub job_status: FinishedStatus,
}

/// A prebuild whose latest build is a start whose job failed: never claimable, kept only for
/// inspection until rules §4 "Failed prebuilds" deletes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedPrebuild {
    pub workspace_id: Uuid,
    pub preset_id: Uuid,
    /// When the failed build was created.
    pub created_at: DateTime<Utc>,
}
