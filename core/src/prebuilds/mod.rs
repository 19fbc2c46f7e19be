//! Prebuild plans and the claim choice (SPEC §4).

mod plan;
mod snapshot;

pub use plan::{Action, PresetState};
pub use snapshot::{
    FinishedStatus, InFlightStatus, InProgressPrebuild, PrebuildSnapshot, Preset, PresetSchedule,
    PresetStatus, RecentBuild, ReconcilerConfig, RunningPrebuild,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A preset's plan for one cycle, with its explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresetPlan {
    pub preset_id: Uuid,
    pub state: PresetState,
    pub hard_limited: bool,
    pub next_check_at: Option<DateTime<Utc>>,
    pub actions: Vec<Action>,
}

/// Plans every preset of the snapshot, in input order.
pub fn plan(_now: DateTime<Utc>, _snapshot: &PrebuildSnapshot) -> Vec<PresetPlan> {
    Vec::new()
}
