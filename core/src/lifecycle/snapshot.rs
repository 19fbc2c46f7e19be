//! The lifecycle snapshot: docs/replay-format.md `lifecycle` section.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::build::{JobStatus, Transition};
use crate::schedule::DayName;
use crate::serde_util::required_nullable;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleSnapshot {
    pub workspaces: Vec<Workspace>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OwnerStatus {
    Active,
    Suspended,
    Dormant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutomaticUpdates {
    Never,
    Always,
}

/// One workspace as the lifecycle rules see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workspace {
    pub id: Uuid,
    pub owner_status: OwnerStatus,
    /// Owned by the `prebuilds` system user: the reconciler's business, not ours.
    pub is_prebuild: bool,
    #[serde(deserialize_with = "required_nullable")]
    pub autostart_schedule: Option<String>,
    #[serde(deserialize_with = "required_nullable")]
    pub next_start_at: Option<DateTime<Utc>>,
    pub last_used_at: DateTime<Utc>,
    #[serde(deserialize_with = "required_nullable")]
    pub dormant_at: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "required_nullable")]
    pub deleting_at: Option<DateTime<Utc>>,
    pub automatic_updates: AutomaticUpdates,
    pub latest_build: LatestBuild,
    pub template: Template,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatestBuild {
    pub transition: Transition,
    pub template_version_id: Uuid,
    pub created_at: DateTime<Utc>,
    #[serde(deserialize_with = "required_nullable")]
    pub deadline: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "required_nullable")]
    pub max_deadline: Option<DateTime<Utc>>,
    pub job_status: JobStatus,
    #[serde(deserialize_with = "required_nullable")]
    pub job_completed_at: Option<DateTime<Utc>>,
}

/// The template's lifecycle options, as they apply to this workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub active_version_id: Uuid,
    pub require_active_version: bool,
    pub user_autostart_enabled: bool,
    pub user_autostop_enabled: bool,
    pub autostart_days: Vec<DayName>,
    pub failure_ttl_secs: u64,
    pub time_til_dormant_secs: u64,
    pub time_til_dormant_autodelete_secs: u64,
}
