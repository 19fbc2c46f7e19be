//! `active(P)` and the desired count `D` (rules §4 "Desired" and "Autoscale", rules §1
//! windows).

use chrono::{DateTime, Utc};

use super::autoscale;
use super::{Claim, Preset};
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
    /// `default (invalid schedules: ...)`, or `autoscale (...)` when the demand asks for more.
    pub target: String,
    /// The validated windows of an active preset, for the next edge.
    pub windows: Option<PrebuildWindows>,
    /// When the autoscaled count may change without new data (rules §4 "Autoscale").
    pub autoscale_changes_at: Option<DateTime<Utc>>,
}

/// rules §4 "Desired": the schedule or default count, raised to the autoscaled count when
/// the preset has one and it is larger (a schedule window is a floor under the demand); 0
/// when inactive.
pub(crate) fn desired(
    preset: &Preset,
    inactive: &[&str],
    claims: &[&Claim],
    now: DateTime<Utc>,
) -> Desired {
    let mut desired = scheduled(preset, inactive, now);
    let Some(rule) = preset.autoscale.filter(|_| inactive.is_empty()) else { return desired };
    let scaled = autoscale::scale(&rule, claims, now);
    desired.autoscale_changes_at = scaled.changes_at;
    let how = format!(
        "peak {} claims per {} s × {} within [{}, {}] = {}",
        scaled.peak, rule.window_secs, rule.headroom, rule.min, rule.max, scaled.count
    );
    if scaled.count > desired.count {
        desired.count = scaled.count;
        desired.target = format!("autoscale ({how})");
    } else {
        desired.target = format!("{} (autoscale: {how})", desired.target);
    }
    desired
}

/// rules §4: the `instances` of the first schedule whose window (opened `schedule_lead_secs`
/// early) contains `now`, else `desired_instances`; 0 when inactive. An invalid schedule set
/// falls back to the default count and says why.
fn scheduled(preset: &Preset, inactive: &[&str], now: DateTime<Utc>) -> Desired {
    if !inactive.is_empty() {
        return Desired {
            count: 0,
            target: format!("inactive ({})", inactive.join(", ")),
            windows: None,
            autoscale_changes_at: None,
        };
    }
    let default = |target: String| Desired {
        count: preset.desired_instances,
        target,
        windows: None,
        autoscale_changes_at: None,
    };
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
    let (count, target) = match open {
        Some((index, instances)) => (instances, format!("schedule[{index}]")),
        None => (preset.desired_instances, "default".to_owned()),
    };
    Desired { count, target, windows: Some(windows), autoscale_changes_at: None }
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
        let d = desired(&p, &inactive_reasons(&p), &[], t("2025-06-02T09:00:00Z"));
        assert_eq!(d.count, 0);
        assert_eq!(d.target, "inactive (template deprecated)");
    }

    #[test]
    fn no_schedules_gives_the_default() {
        let p = scheduled("", &[]);
        let d = desired(&p, &[], &[], t("2025-06-02T09:00:00Z"));
        assert_eq!((d.count, d.target.as_str()), (2, "default"));
    }

    #[test]
    fn invalid_schedules_fall_back_to_the_default_and_say_why() {
        let p = scheduled("Mars/Olympus_Mons", &[("* 9-18 * * 1-5", 5)]);
        let d = desired(&p, &[], &[], t("2025-06-02T10:00:00Z"));
        assert_eq!(d.count, 2);
        assert!(d.target.starts_with("default (invalid schedules: "), "{}", d.target);
        let p = scheduled("UTC", &[("0 9-18 * * 1-5", 5)]);
        assert!(desired(&p, &[], &[], t("2025-06-02T10:00:00Z"))
            .target
            .starts_with("default (invalid"));
    }

    #[test]
    fn first_open_window_wins() {
        // 2025-06-02 is a Monday.
        let p = scheduled("UTC", &[("* 9-11 * * 1-5", 5), ("* 12-18 * * 1-5", 7)]);
        let d = desired(&p, &[], &[], t("2025-06-02T09:00:00Z"));
        assert_eq!((d.count, d.target.as_str()), (5, "schedule[0]"));
        let d = desired(&p, &[], &[], t("2025-06-02T12:30:00Z"));
        assert_eq!((d.count, d.target.as_str()), (7, "schedule[1]"));
        let d = desired(&p, &[], &[], t("2025-06-02T08:59:59Z"));
        assert_eq!((d.count, d.target.as_str()), (2, "default"));
    }

    #[test]
    fn autoscale_raises_the_count_and_a_window_is_a_floor() {
        use crate::prebuilds::rows::tests::id;
        use crate::prebuilds::{Autoscale, Claim};
        let mut p = scheduled("UTC", &[("* 9-11 * * 1-5", 5)]);
        p.autoscale = Some(Autoscale { min: 1, max: 8, window_secs: 600, headroom: 2.0 });
        let claims: Vec<Claim> = (0..3)
            .map(|i| Claim {
                workspace_id: id(50 + i),
                preset_id: id(1),
                at: t("2025-06-02T08:55:00Z"),
            })
            .collect();
        let refs: Vec<&Claim> = claims.iter().collect();
        let d = desired(&p, &[], &refs, t("2025-06-02T09:00:00Z"));
        assert_eq!(d.count, 6, "3 claims × 2 beats the window's 5");
        assert!(d.target.starts_with("autoscale (peak 3 claims"), "{}", d.target);
        let d = desired(&p, &[], &refs[..1], t("2025-06-02T09:00:00Z"));
        assert_eq!((d.count, d.target.starts_with("schedule[0] (autoscale: ")), (5, true));
        let d = desired(&p, &[], &[], t("2025-06-02T08:00:00Z"));
        assert_eq!(d.count, 2, "the default 2 beats min 1");
        p.template_deprecated = true;
        assert_eq!(desired(&p, &inactive_reasons(&p), &refs, t("2025-06-02T09:00:00Z")).count, 0);
    }

    #[test]
    fn lead_time_opens_windows_early() {
        let mut p = scheduled("UTC", &[("* 9-18 * * 1-5", 5)]);
        p.schedule_lead_secs = 600;
        assert_eq!(desired(&p, &[], &[], t("2025-06-02T08:50:00Z")).count, 5);
        assert_eq!(desired(&p, &[], &[], t("2025-06-02T08:49:59Z")).count, 2);
    }
}
