//! Test fixtures: a plain running workspace to modify case by case.

use uuid::Uuid;

use super::{AutomaticUpdates, LatestBuild, OwnerStatus, Template, Workspace};
use crate::build::{JobStatus, Transition};
use crate::schedule::DayName;

pub const OLD_VERSION: Uuid = Uuid::from_u128(0xA1);
pub const ACTIVE_VERSION: Uuid = Uuid::from_u128(0xA2);

/// Weekdays at 09:30 Berlin time (07:30Z in summer).
pub const BERLIN_WEEKDAYS: &str = "CRON_TZ=Europe/Berlin 30 9 * * 1-5";

pub(crate) use crate::t as at;

/// An active owner's running workspace on an old template version: its start build succeeded
/// on Monday 2025-06-02 at 08:00Z, no deadline, no schedule, every template option off.
pub fn workspace() -> Workspace {
    Workspace {
        id: Uuid::from_u128(0x1),
        owner_status: OwnerStatus::Active,
        is_prebuild: false,
        autostart_schedule: None,
        next_start_at: None,
        last_used_at: at("2025-06-02T08:00:00Z"),
        dormant_at: None,
        deleting_at: None,
        automatic_updates: AutomaticUpdates::Never,
        latest_build: LatestBuild {
            transition: Transition::Start,
            template_version_id: OLD_VERSION,
            created_at: at("2025-06-02T08:00:00Z"),
            deadline: None,
            max_deadline: None,
            job_status: JobStatus::Succeeded,
            job_completed_at: Some(at("2025-06-02T08:01:00Z")),
        },
        template: Template {
            active_version_id: ACTIVE_VERSION,
            require_active_version: false,
            user_autostart_enabled: true,
            user_autostop_enabled: true,
            autostart_days: DayName::ALL.to_vec(),
            failure_ttl_secs: 0,
            time_til_dormant_secs: 0,
            time_til_dormant_autodelete_secs: 0,
        },
    }
}

/// The same workspace, stopped by a build that succeeded at `created` (+1 min).
pub fn stopped(created: &str) -> Workspace {
    let mut workspace = workspace();
    workspace.latest_build.transition = Transition::Stop;
    workspace.latest_build.created_at = at(created);
    workspace.latest_build.job_completed_at = Some(at(created) + chrono::TimeDelta::minutes(1));
    workspace
}
