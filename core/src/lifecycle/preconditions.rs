//! What rules §2 settles before trying the rules: prebuilds, deleted workspaces, builds in
//! flight, and the recomputation of a missing `next_start_at`.

use chrono::{DateTime, Utc};

use super::facts::{show, AutostartSchedule, Facts};
use super::rules::Why;
use super::{Rule, Workspace};
use crate::build::{JobStatus, Transition};
#[cfg(test)]
use crate::schedule::next_autostart;
use crate::schedule::{CronSchedule, WeekdaySet};

/// A precondition that stops the rules from being tried, with its explanation.
pub(crate) fn settled_before_rules(workspace: &Workspace) -> Option<(Rule, String)> {
    let build = &workspace.latest_build;
    if workspace.is_prebuild {
        // rules §2: prebuilds belong to the reconciler (rules §4). docs/replay-format.md still wants one
        // entry per workspace, so the entry says whose they are.
        return Some((
            Rule::Prebuild,
            "prebuild: owned by the prebuilds system user, the reconciler decides".into(),
        ));
    }
    if build.transition == Transition::Delete && build.job_status == JobStatus::Succeeded {
        // Not in rules §2's list: the shell loads no deleted workspace, and deciding for one
        // would only delete it again.
        return Some((Rule::Deleted, "deleted: the latest build is a succeeded delete".into()));
    }
    None
}

/// rules §2: nothing but `next_start_at` is decided while a build is in flight (Coder tries and
/// fails every tick instead).
pub(crate) fn in_flight(workspace: &Workspace) -> Option<String> {
    let build = &workspace.latest_build;
    build.job_status.is_in_flight().then(|| {
        format!(
            "in flight: the latest build ({}) is {}, nothing else decided",
            build.transition.as_str(),
            build.job_status.as_str()
        )
    })
}

/// The outcome of rules §2's `next_start_at` recomputation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NextStart {
    /// The recomputed instant, when there is one.
    pub at: Option<DateTime<Utc>>,
    /// What the explanation says about it (`None`: nothing worth saying).
    pub note: Option<Why>,
}

/// `next_start_with`, computing `next_autostart` itself (what `plan` remembers per schedule).
#[cfg(test)]
pub(crate) fn next_start(facts: &Facts<'_>) -> NextStart {
    next_start_with(facts, |schedule, days| next_autostart(facts.tick, schedule, days))
}

/// rules §2: a workspace with an autostart schedule, no `next_start_at` and no dormancy gets
/// `next_start_at = next_autostart(tick, schedule, autostart_days)`, which the caller supplies
/// as `next_after_tick(schedule, autostart_days)` (the same for every workspace of a plan).
pub(crate) fn next_start_with(
    facts: &Facts<'_>,
    next_after_tick: impl FnOnce(&CronSchedule, WeekdaySet) -> Option<DateTime<Utc>>,
) -> NextStart {
    let quiet = NextStart { at: None, note: None };
    if facts.workspace.next_start_at.is_some() {
        return quiet;
    }
    let note = |note: Why| NextStart { at: None, note: Some(note) };
    match facts.schedule {
        AutostartSchedule::Unset => quiet,
        AutostartSchedule::Invalid(err) => note(
            format!("next_start_at not computed: autostart schedule is invalid ({err})").into(),
        ),
        AutostartSchedule::Valid(_) if facts.is_dormant() => {
            note("next_start_at not computed: workspace is dormant".into())
        }
        AutostartSchedule::Valid(schedule) => {
            match next_after_tick(schedule, facts.allowed_days()) {
                Some(at) => NextStart {
                    at: Some(at),
                    note: Some(format!("next_start_at = {}", show(at)).into()),
                },
                None => {
                    note("next_start_at not computed: no allowed autostart within 14 days".into())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::facts::schedule_text;
    use crate::lifecycle::fixtures::{at, stopped, workspace, BERLIN_WEEKDAYS};
    use crate::schedule::{parse_autostart, DayName};

    fn next_start_of(workspace: &Workspace, tick: &str) -> NextStart {
        let parsed = schedule_text(workspace).map(parse_autostart);
        next_start(&Facts {
            workspace,
            tick: at(tick),
            schedule: AutostartSchedule::from_parsed(parsed.as_ref()),
        })
    }

    #[test]
    fn prebuilds_and_deleted_workspaces_are_not_decided() {
        let mut prebuild = workspace();
        prebuild.is_prebuild = true;
        assert_eq!(settled_before_rules(&prebuild).map(|(rule, _)| rule), Some(Rule::Prebuild));

        let mut deleted = workspace();
        deleted.latest_build.transition = Transition::Delete;
        assert_eq!(settled_before_rules(&deleted).map(|(rule, _)| rule), Some(Rule::Deleted));

        deleted.latest_build.job_status = JobStatus::Failed;
        assert_eq!(settled_before_rules(&deleted), None);
        assert_eq!(settled_before_rules(&workspace()), None);
    }

    #[test]
    fn pending_running_and_canceling_jobs_are_in_flight() {
        for status in JobStatus::ALL {
            let mut ws = workspace();
            ws.latest_build.job_status = status;
            assert_eq!(
                in_flight(&ws).is_some(),
                matches!(status, JobStatus::Pending | JobStatus::Running | JobStatus::Canceling),
                "{status:?}"
            );
        }
    }

    #[test]
    fn a_missing_next_start_at_is_recomputed_from_the_tick() {
        let mut ws = stopped("2025-06-02T18:00:00Z");
        ws.autostart_schedule = Some(BERLIN_WEEKDAYS.into());
        // Friday 2025-06-06 at 08:00Z: Friday's 07:30Z has passed, Monday's is next.
        let next = next_start_of(&ws, "2025-06-06T08:00:00Z");
        assert_eq!(next.at, Some(at("2025-06-09T07:30:00Z")));
        assert_eq!(next.note.as_deref(), Some("next_start_at = 2025-06-09T07:30:00Z"));
        // Strictly after the tick: at 07:30Z itself the next one is the following day's.
        assert_eq!(next_start_of(&ws, "2025-06-03T07:30:00Z").at, Some(at("2025-06-04T07:30:00Z")));
    }

    #[test]
    fn recomputation_respects_the_template_days() {
        let mut ws = stopped("2025-06-02T18:00:00Z");
        ws.autostart_schedule = Some(BERLIN_WEEKDAYS.into());
        ws.template.autostart_days = vec![DayName::Thu];
        assert_eq!(next_start_of(&ws, "2025-06-02T18:00:00Z").at, Some(at("2025-06-05T07:30:00Z")));
        ws.template.autostart_days = vec![DayName::Sun];
        let none = next_start_of(&ws, "2025-06-02T18:00:00Z");
        assert_eq!(none.at, None);
        assert_eq!(
            none.note.as_deref(),
            Some("next_start_at not computed: no allowed autostart within 14 days")
        );
    }

    #[test]
    fn no_recomputation_when_set_unscheduled_dormant_or_invalid() {
        let mut ws = stopped("2025-06-02T18:00:00Z");
        assert_eq!(next_start_of(&ws, "2025-06-03T00:00:00Z"), NextStart { at: None, note: None });

        ws.autostart_schedule = Some(BERLIN_WEEKDAYS.into());
        ws.next_start_at = Some(at("2025-06-10T07:30:00Z"));
        assert_eq!(next_start_of(&ws, "2025-06-03T00:00:00Z"), NextStart { at: None, note: None });

        ws.next_start_at = None;
        ws.dormant_at = Some(at("2025-06-02T20:00:00Z"));
        assert_eq!(
            next_start_of(&ws, "2025-06-03T00:00:00Z").note.as_deref(),
            Some("next_start_at not computed: workspace is dormant")
        );

        ws.dormant_at = None;
        ws.autostart_schedule = Some("30 9 1 * 1-5".into());
        let invalid = next_start_of(&ws, "2025-06-03T00:00:00Z");
        assert_eq!(invalid.at, None);
        assert!(
            invalid.note.as_deref().is_some_and(|n| n.contains("autostart schedule is invalid")),
            "{invalid:?}"
        );
    }
}
