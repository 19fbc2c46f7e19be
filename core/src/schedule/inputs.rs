//! docs/replay-format.md `build_completions` and `activity` entries and their results (rules §3).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::DayName;
use crate::build::Transition;
use crate::serde_util::required_nullable;

/// A start build whose job just succeeded: compute its deadlines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildCompletion {
    pub id: String,
    pub completed_at: DateTime<Utc>,
    pub is_prebuild: bool,
    /// 0 = the workspace has no TTL.
    pub workspace_ttl_secs: u64,
    #[serde(deserialize_with = "required_nullable")]
    pub autostart_schedule: Option<String>,
    /// `None` = no quiet hours: no max deadline.
    #[serde(deserialize_with = "required_nullable")]
    pub owner_quiet_hours_schedule: Option<String>,
    pub template: CompletionTemplate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionTemplate {
    pub user_autostop_enabled: bool,
    pub default_ttl_secs: u64,
    /// `[]` = no autostop requirement.
    pub autostop_requirement_days: Vec<DayName>,
    /// Every N weeks; 0 is read as 1.
    pub autostop_requirement_weeks: u32,
    pub autostart_days: Vec<DayName>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildCompletionResult {
    pub id: String,
    pub deadline: Option<DateTime<Utc>>,
    pub max_deadline: Option<DateTime<Utc>>,
    pub next_start_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// Explanation of a fallback (quiet hours that do not parse count as the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A session reported for a workspace: maybe bump its deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityReport {
    pub id: String,
    pub at: DateTime<Utc>,
    pub is_prebuild: bool,
    pub build: ActivityBuild,
    pub workspace_ttl_secs: u64,
    /// The next allowed autostart after `at`, if any.
    #[serde(deserialize_with = "required_nullable")]
    pub next_autostart: Option<DateTime<Utc>>,
    pub template: ActivityTemplate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityBuild {
    pub transition: Transition,
    pub job_completed: bool,
    #[serde(deserialize_with = "required_nullable")]
    pub deadline: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "required_nullable")]
    pub max_deadline: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityTemplate {
    pub default_ttl_secs: u64,
    pub user_autostop_enabled: bool,
    pub activity_bump_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityResult {
    pub id: String,
    pub deadline: Option<DateTime<Utc>>,
}
