//! rules §2 rule 2: autostart.

use super::{latest_build_is, Fired, Verdict};
use crate::build::{JobStatus, Transition};
use crate::lifecycle::facts::{show, AutostartSchedule, Facts};
use crate::lifecycle::{AutomaticUpdates, OwnerStatus};
use crate::schedule::next_autostart;

/// A stopped workspace starts once the first allowed firing of its schedule after the stop
/// build has come (so a start missed while the daemon was down is caught up), unless
/// `next_start_at` says to wait (editing a schedule never starts a workspace at once).
pub(crate) fn autostart(facts: &Facts<'_>) -> Verdict {
    let workspace = facts.workspace;
    let build = &workspace.latest_build;
    if workspace.owner_status != OwnerStatus::Active {
        return Verdict::Passes(owner_is(workspace.owner_status).into());
    }
    if build.job_status == JobStatus::Failed {
        return Verdict::Passes("latest build failed".into());
    }
    if facts.is_dormant() {
        return Verdict::Passes("workspace is dormant".into());
    }
    if build.transition != Transition::Stop {
        return Verdict::Passes(latest_build_is(build.transition).into());
    }
    if !workspace.template.user_autostart_enabled {
        return Verdict::Passes("template disables user autostart".into());
    }
    let schedule = match facts.schedule {
        AutostartSchedule::Unset => return Verdict::Passes("no autostart schedule".into()),
        AutostartSchedule::Invalid(err) => {
            return Verdict::Passes(format!("autostart schedule is invalid ({err})").into())
        }
        AutostartSchedule::Valid(schedule) => schedule,
    };
    if let Some(next_start_at) = workspace.next_start_at.filter(|next| *next > facts.tick) {
        return Verdict::Passes(
            format!("next_start_at {} is in the future", show(next_start_at)).into(),
        );
    }
    let Some(due) = next_autostart(build.created_at, schedule, facts.allowed_days()) else {
        return Verdict::Passes(
            format!(
                "no allowed autostart within 14 days after the stop at {}",
                show(build.created_at)
            )
            .into(),
        );
    };
    if facts.tick < due {
        return Verdict::Passes(format!("next autostart {} not reached", show(due)).into());
    }
    let template = &workspace.template;
    let update = if template.require_active_version {
        "; on the active version (template requires it)"
    } else if workspace.automatic_updates == AutomaticUpdates::Always {
        "; on the active version (automatic updates)"
    } else {
        ""
    };
    Verdict::Fires(Fired {
        use_active_version: !update.is_empty(),
        ..Fired::transition(
            Transition::Start,
            format!(
                "scheduled start {} reached (stopped at {}){update}",
                show(due),
                show(build.created_at)
            ),
        )
    })
}

fn owner_is(status: OwnerStatus) -> &'static str {
    match status {
        OwnerStatus::Active => "owner is active",
        OwnerStatus::Suspended => "owner is suspended",
        OwnerStatus::Dormant => "owner is dormant",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::fixtures::{at, stopped, BERLIN_WEEKDAYS};
    use crate::lifecycle::rules::testing::{check, fires, passes};
    use crate::schedule::DayName;

    /// Stopped on Monday 2025-06-02 at 18:00Z; the schedule fires at 07:30Z on weekdays
    /// (Berlin is UTC+2 in June).
    fn stopped_monday_evening() -> crate::lifecycle::Workspace {
        let mut ws = stopped("2025-06-02T18:00:00Z");
        ws.autostart_schedule = Some(BERLIN_WEEKDAYS.into());
        ws
    }

    #[test]
    fn fires_at_the_scheduled_instant_itself() {
        let ws = stopped_monday_evening();
        assert_eq!(
            passes(check(autostart, &ws, at("2025-06-03T07:29:00Z"))),
            "next autostart 2025-06-03T07:30:00Z not reached"
        );
        let fired = fires(check(autostart, &ws, at("2025-06-03T07:30:00Z")));
        assert_eq!(fired.transition, Some(Transition::Start));
        assert!(!fired.use_active_version);
        assert_eq!(
            fired.why,
            "scheduled start 2025-06-03T07:30:00Z reached (stopped at 2025-06-02T18:00:00Z)"
        );
    }

    #[test]
    fn a_start_missed_while_down_is_caught_up() {
        let ws = stopped_monday_evening();
        fires(check(autostart, &ws, at("2025-06-04T12:00:00Z")));
    }

    #[test]
    fn next_start_at_in_the_future_blocks_it() {
        let mut ws = stopped_monday_evening();
        ws.next_start_at = Some(at("2025-06-04T07:30:00Z"));
        assert_eq!(
            passes(check(autostart, &ws, at("2025-06-03T07:30:00Z"))),
            "next_start_at 2025-06-04T07:30:00Z is in the future"
        );
        ws.next_start_at = Some(at("2025-06-03T07:30:00Z"));
        fires(check(autostart, &ws, at("2025-06-03T07:30:00Z")));
    }

    #[test]
    fn skips_days_the_template_disallows() {
        // Stopped on Friday evening; Monday is the next weekday, but only Tuesday is allowed.
        let mut ws = stopped("2025-06-06T18:00:00Z");
        ws.autostart_schedule = Some(BERLIN_WEEKDAYS.into());
        ws.template.autostart_days = vec![DayName::Tue];
        assert_eq!(
            passes(check(autostart, &ws, at("2025-06-09T07:30:00Z"))),
            "next autostart 2025-06-10T07:30:00Z not reached"
        );
        fires(check(autostart, &ws, at("2025-06-10T07:30:00Z")));
    }

    #[test]
    fn no_allowed_day_means_no_autostart() {
        let mut ws = stopped_monday_evening();
        ws.template.autostart_days = vec![DayName::Sat, DayName::Sun];
        assert_eq!(
            passes(check(autostart, &ws, at("2025-06-20T07:30:00Z"))),
            "no allowed autostart within 14 days after the stop at 2025-06-02T18:00:00Z"
        );
    }

    #[test]
    fn moves_to_the_active_version_when_required_or_always_updating() {
        let tick = at("2025-06-03T07:30:00Z");
        let mut required = stopped_monday_evening();
        required.template.require_active_version = true;
        let fired = fires(check(autostart, &required, tick));
        assert!(fired.use_active_version);
        assert!(
            fired.why.ends_with("on the active version (template requires it)"),
            "{}",
            fired.why
        );

        let mut always = stopped_monday_evening();
        always.automatic_updates = AutomaticUpdates::Always;
        let fired = fires(check(autostart, &always, tick));
        assert!(fired.use_active_version);
        assert!(fired.why.ends_with("on the active version (automatic updates)"), "{}", fired.why);
    }

    #[test]
    fn only_active_owners_healthy_stopped_workspaces_with_autostart_allowed() {
        let tick = at("2025-06-03T07:30:00Z");
        type Change = fn(&mut crate::lifecycle::Workspace);
        let cases: [(Change, &str); 7] = [
            (|ws| ws.owner_status = OwnerStatus::Dormant, "owner is dormant"),
            (|ws| ws.owner_status = OwnerStatus::Suspended, "owner is suspended"),
            (|ws| ws.latest_build.job_status = JobStatus::Failed, "latest build failed"),
            (|ws| ws.dormant_at = Some(at("2025-06-01T00:00:00Z")), "workspace is dormant"),
            (|ws| ws.latest_build.transition = Transition::Start, "latest build is a start"),
            (|ws| ws.template.user_autostart_enabled = false, "template disables user autostart"),
            (|ws| ws.autostart_schedule = Some("  ".into()), "no autostart schedule"),
        ];
        for (change, why) in cases {
            let mut ws = stopped_monday_evening();
            change(&mut ws);
            assert_eq!(passes(check(autostart, &ws, tick)), why);
        }
    }

    #[test]
    fn an_invalid_schedule_is_explained_not_a_panic() {
        let mut ws = stopped_monday_evening();
        ws.autostart_schedule = Some("CRON_TZ=Nowhere/Atlantis 30 9 * * 1-5".into());
        let why = passes(check(autostart, &ws, at("2025-06-03T07:30:00Z")));
        assert!(why.starts_with("autostart schedule is invalid ("), "{why}");
    }
}
