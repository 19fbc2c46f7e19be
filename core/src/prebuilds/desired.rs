//! `active(P)` and the desired count `D` (rules §4 "Desired", rules §1 windows).

use chrono::{DateTime, Utc};

use super::Preset;
use crate::schedule::PrebuildWindows;

/// Why a preset is not active (rules §4 `active(P)`); empty = active.
pub(crate) fn inactive_reasons(preset: &Preset) -> Vec<&'static str> {
    let mut reasons = Vec::new();
    if !preset.using_active_version {
        reasons.push("not the active version");
    }
    if preset.template_deleted {
        reasons.push("template deleted");
    }
    if preset.template_deprecated {
        reasons.push("template deprecated");
    }
    reasons
}

/// `D` and where it came from.
#[derive(Debug)]
pub(crate) struct Desired {
    pub count: u32,
    /// Explanation: `inactive (...)`, `default`, `schedule[i]` or
    /// `default (invalid schedules: ...)`.
    pub target: String,
    /// The validated windows of an active preset, for the next edge.
    pub windows: Option<PrebuildWindows>,
}

/// rules §4: the `instances` of the first schedule whose window (opened `schedule_lead_secs`
/// early) contains `now`, else `desired_instances`; 0 when inactive. An invalid schedule set
/// falls back to the default count and says why.
pub(crate) fn desired(preset: &Preset, inactive: &[&str], now: DateTime<Utc>) -> Desired {
    if !inactive.is_empty() {
        return Desired {
            count: 0,
            target: format!("inactive ({})", inactive.join(", ")),
            windows: None,
        };
    }
    let default =
        |target: String| Desired { count: preset.desired_instances, target, windows: None };
    if preset.schedules.is_empty() {
        return default("default".to_owned());
    }
    let crons = preset.schedules.iter().map(|s| s.cron.as_str());
    let windows = match PrebuildWindows::validate(&preset.scheduling_timezone, crons) {
        Ok(windows) => windows,
        Err(err) => return default(format!("default (invalid schedules: {err})")),
    };
    let open = windows
        .first_open(now, preset.schedule_lead_secs)
        .and_then(|index| preset.schedules.get(index).map(|s| (index, s.instances)));
    match open {
        Some((index, instances)) => Desired {
            count: instances,
            target: format!("schedule[{index}]"),
            windows: Some(windows),
        },
        None => Desired {
            count: preset.desired_instances,
            target: "default".to_owned(),
            windows: Some(windows),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prebuilds::rows::tests::{preset, t};
    use crate::prebuilds::PresetSchedule;

    fn scheduled(zone: &str, schedules: &[(&str, u32)]) -> Preset {
        let mut p = preset(1);
        p.desired_instances = 2;
        p.scheduling_timezone = zone.to_owned();
        p.schedules = schedules
            .iter()
            .map(|(cron, instances)| PresetSchedule {
                cron: (*cron).to_owned(),
                instances: *instances,
            })
            .collect();
        p
    }

    #[test]
    fn active_needs_active_version_live_and_undeprecated_template() {
        let mut p = preset(1);
        assert!(inactive_reasons(&p).is_empty());
        p.using_active_version = false;
        p.template_deleted = true;
        p.template_deprecated = true;
        assert_eq!(
            inactive_reasons(&p),
            ["not the active version", "template deleted", "template deprecated"]
        );
    }

    #[test]
    fn inactive_wants_nothing() {
        let mut p = scheduled("UTC", &[("* 0-23 * * *", 9)]);
        p.template_deprecated = true;
        let d = desired(&p, &inactive_reasons(&p), t("2025-06-02T09:00:00Z"));
        assert_eq!(d.count, 0);
        assert_eq!(d.target, "inactive (template deprecated)");
    }

    #[test]
    fn no_schedules_gives_the_default() {
        let p = scheduled("", &[]);
        let d = desired(&p, &[], t("2025-06-02T09:00:00Z"));
        assert_eq!((d.count, d.target.as_str()), (2, "default"));
    }

    #[test]
    fn invalid_schedules_fall_back_to_the_default_and_say_why() {
        let p = scheduled("Mars/Olympus_Mons", &[("* 9-18 * * 1-5", 5)]);
        let d = desired(&p, &[], t("2025-06-02T10:00:00Z"));
        assert_eq!(d.count, 2);
        assert!(d.target.starts_with("default (invalid schedules: "), "{}", d.target);
        let p = scheduled("UTC", &[("0 9-18 * * 1-5", 5)]);
        assert!(desired(&p, &[], t("2025-06-02T10:00:00Z")).target.starts_with("default (invalid"));
    }

    #[test]
    fn first_open_window_wins() {
        // 2025-06-02 is a Monday.
        let p = scheduled("UTC", &[("* 9-11 * * 1-5", 5), ("* 12-18 * * 1-5", 7)]);
        let d = desired(&p, &[], t("2025-06-02T09:00:00Z"));
        assert_eq!((d.count, d.target.as_str()), (5, "schedule[0]"));
        let d = desired(&p, &[], t("2025-06-02T12:30:00Z"));
        assert_eq!((d.count, d.target.as_str()), (7, "schedule[1]"));
        let d = desired(&p, &[], t("2025-06-02T08:59:59Z"));
        assert_eq!((d.count, d.target.as_str()), (2, "default"));
    }

    #[test]
    fn lead_time_opens_windows_early() {
        let mut p = scheduled("UTC", &[("* 9-18 * * 1-5", 5)]);
        p.schedule_lead_secs = 600;
        assert_eq!(desired(&p, &[], t("2025-06-02T08:50:00Z")).count, 5);
        assert_eq!(desired(&p, &[], t("2025-06-02T08:49:59Z")).count, 2);
    }
}
