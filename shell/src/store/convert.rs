//! Conversions between the stored forms (`db::enums`, `db::models`, loader rows) and the
//! core's types, in one place: a new variant or field is mapped here once.

use chrono::{DateTime, Utc};
use poolkeeper_core::agent::AgentState;
use poolkeeper_core::build::Transition as CoreTransition;
use poolkeeper_core::prebuilds::{Preset as CorePreset, PresetSchedule, PresetStatus};
use uuid::Uuid;

use crate::db::enums::{AgentLifecycle, PrebuildStatus, Transition};

impl From<Transition> for CoreTransition {
    fn from(transition: Transition) -> Self {
        match transition {
            Transition::Start => Self::Start,
            Transition::Stop => Self::Stop,
            Transition::Delete => Self::Delete,
        }
    }
}

impl From<CoreTransition> for Transition {
    fn from(transition: CoreTransition) -> Self {
        match transition {
            CoreTransition::Start => Self::Start,
            CoreTransition::Stop => Self::Stop,
            CoreTransition::Delete => Self::Delete,
        }
    }
}

impl From<PrebuildStatus> for PresetStatus {
    fn from(status: PrebuildStatus) -> Self {
        match status {
            PrebuildStatus::Healthy => Self::Healthy,
            PrebuildStatus::HardLimited => Self::HardLimited,
            PrebuildStatus::ValidationFailed => Self::ValidationFailed,
        }
    }
}

impl From<PresetStatus> for PrebuildStatus {
    fn from(status: PresetStatus) -> Self {
        match status {
            PresetStatus::Healthy => Self::Healthy,
            PresetStatus::HardLimited => Self::HardLimited,
            PresetStatus::ValidationFailed => Self::ValidationFailed,
        }
    }
}

impl From<AgentLifecycle> for AgentState {
    fn from(state: AgentLifecycle) -> Self {
        match state {
            AgentLifecycle::Created => Self::Created,
            AgentLifecycle::Starting => Self::Starting,
            AgentLifecycle::Ready => Self::Ready,
            AgentLifecycle::StartError => Self::StartError,
            AgentLifecycle::ShuttingDown => Self::ShuttingDown,
            AgentLifecycle::Off => Self::Off,
        }
    }
}

/// A preset as stored, with what the core needs to know of its template.
pub(crate) struct StoredPreset {
    pub id: Uuid,
    pub name: String,
    pub template_id: Uuid,
    pub template_version_id: Uuid,
    pub using_active_version: bool,
    pub template_deleted: bool,
    pub template_deprecated: bool,
    /// `None` (no pool) counts as 0.
    pub desired_instances: Option<i32>,
    pub expiration_ttl_secs: i64,
    pub scheduling_timezone: String,
    pub schedule_lead_secs: i64,
    pub invalidated_at: Option<DateTime<Utc>>,
    pub status: PrebuildStatus,
    pub schedules: Vec<PresetSchedule>,
    pub autoscale: Option<poolkeeper_core::prebuilds::Autoscale>,
}

/// The core's preset; a negative count or duration (which the schema's CHECKs forbid) is an
/// unreadable row, named by the error, never read as 0.
pub(crate) fn core_preset(stored: StoredPreset) -> Result<CorePreset, &'static str> {
    Ok(CorePreset {
        id: stored.id,
        name: stored.name,
        template_id: stored.template_id,
        template_version_id: stored.template_version_id,
        using_active_version: stored.using_active_version,
        template_deleted: stored.template_deleted,
        template_deprecated: stored.template_deprecated,
        desired_instances: u32::try_from(stored.desired_instances.unwrap_or(0))
            .map_err(|_| "negative desired_instances")?,
        expiration_ttl_secs: u64::try_from(stored.expiration_ttl_secs)
            .map_err(|_| "negative expiration_ttl_secs")?,
        scheduling_timezone: stored.scheduling_timezone,
        schedules: stored.schedules,
        schedule_lead_secs: u64::try_from(stored.schedule_lead_secs)
            .map_err(|_| "negative schedule_lead_secs")?,
        invalidated_at: stored.invalidated_at,
        status: stored.status.into(),
        autoscale: stored.autoscale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> StoredPreset {
        StoredPreset {
            id: Uuid::from_u128(1),
            name: "small".into(),
            template_id: Uuid::from_u128(2),
            template_version_id: Uuid::from_u128(3),
            using_active_version: true,
            template_deleted: false,
            template_deprecated: false,
            desired_instances: Some(2),
            expiration_ttl_secs: 60,
            scheduling_timezone: String::new(),
            schedule_lead_secs: 0,
            invalidated_at: None,
            status: PrebuildStatus::HardLimited,
            schedules: Vec::new(),
            autoscale: None,
        }
    }

    #[test]
    fn a_negative_value_is_an_unreadable_row_named_by_its_field() {
        let preset = core_preset(stored()).expect("valid");
        assert_eq!((preset.desired_instances, preset.status), (2, PresetStatus::HardLimited));
        let mut bad = stored();
        bad.expiration_ttl_secs = -1;
        assert_eq!(core_preset(bad).err(), Some("negative expiration_ttl_secs"));
        let mut no_pool = stored();
        no_pool.desired_instances = None;
        assert_eq!(core_preset(no_pool).map(|p| p.desired_instances), Ok(0));
    }

    #[test]
    fn enums_round_trip() {
        for t in [Transition::Start, Transition::Stop, Transition::Delete] {
            assert_eq!(Transition::from(CoreTransition::from(t)), t);
        }
        for s in
            [PrebuildStatus::Healthy, PrebuildStatus::HardLimited, PrebuildStatus::ValidationFailed]
        {
            assert_eq!(PrebuildStatus::from(PresetStatus::from(s)), s);
        }
    }
}
