//! What the rules will do to a workspace next if nothing about it changes (the dashboard's
//! "upcoming" lists): `decide` itself, asked at the few ticks where a rule's outcome can
//! change. Those ticks come from the instants the workspace carries (deadlines, the next
//! autostart, and each "since + template TTL"), so no rule is restated here: at each such tick
//! the rulebook decides, and the first decision that builds or marks dormant is the answer.

use chrono::{DateTime, TimeDelta, Utc};

use super::{decide, tick_of, Decision, Workspace};
use crate::instant::plus_secs;

/// A decision the rules will take at `at`, unless the workspace changes before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upcoming {
    pub at: DateTime<Utc>,
    pub decision: Decision,
}

/// A failed delete is retried a day after its job completed (rules §2 rule 5).
const DELETE_RETRY_SECS: u64 = 24 * 3600;

/// The first tick in `[tick_of(now), tick_of(now) + horizon]` at which `decide` builds or
/// marks `workspace` dormant, with that decision; `None` if none does within the horizon.
pub fn upcoming(workspace: &Workspace, now: DateTime<Utc>, horizon: TimeDelta) -> Option<Upcoming> {
    let tick = tick_of(now);
    let end = tick.checked_add_signed(horizon)?;
    let mut ticks: Vec<DateTime<Utc>> = vec![tick];
    for instant in candidate_instants(workspace, tick) {
        // A rule compares with `<`, `<=` or `>`: the tick of the instant and the one after
        // cover both kinds of boundary.
        let first = tick_of(instant);
        ticks.push(first);
        ticks.extend(first.checked_add_signed(TimeDelta::minutes(1)));
    }
    ticks.retain(|at| *at >= tick && *at <= end);
    ticks.sort_unstable();
    ticks.dedup();
    ticks.into_iter().find_map(|at| {
        let decision = decide(workspace, at);
        let acts = decision.transition.is_some() || decision.mark_dormant.is_some();
        acts.then_some(Upcoming { at, decision })
    })
}

/// Every instant at which one of the rules' inputs crosses a boundary.
fn candidate_instants(workspace: &Workspace, tick: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let build = &workspace.latest_build;
    let template = &workspace.template;
    let after = |since: Option<DateTime<Utc>>, secs: u64| since.and_then(|s| plus_secs(s, secs));
    let mut instants: Vec<DateTime<Utc>> = [
        build.deadline,
        build.max_deadline,
        workspace.next_start_at,
        workspace.deleting_at,
        // The next autostart the core would compute now (when none is stored yet).
        decide(workspace, tick).next_start_at,
        after(Some(workspace.last_used_at), template.time_til_dormant_secs),
        after(workspace.dormant_at, template.time_til_dormant_autodelete_secs),
        after(build.job_completed_at, template.failure_ttl_secs),
        after(build.job_completed_at, DELETE_RETRY_SECS),
    ]
    .into_iter()
    .flatten()
    .collect();
    instants.sort_unstable();
    instants.dedup();
    instants
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::Transition;
    use crate::lifecycle::fixtures::{at, stopped, workspace, BERLIN_WEEKDAYS};
    use crate::lifecycle::{Reason, Rule};

    const HOUR: TimeDelta = TimeDelta::hours(1);

    #[test]
    fn an_autostop_at_the_deadline_within_the_hour() {
        let mut ws = workspace();
        ws.latest_build.deadline = Some(at("2025-06-02T17:00:30Z"));
        let next = upcoming(&ws, at("2025-06-02T16:20:10Z"), HOUR).expect("an autostop");
        // A mid-minute deadline is reached on the tick after it (rules §2 rule 1).
        assert_eq!(next.at, at("2025-06-02T17:01:00Z"));
        assert_eq!(next.decision.reason, Some(Reason::Autostop));
        assert_eq!(next.decision.transition, Some(Transition::Stop));
        // Beyond the horizon: nothing.
        assert_eq!(upcoming(&ws, at("2025-06-02T15:00:00Z"), HOUR), None);
    }

    #[test]
    fn an_autostart_at_the_next_scheduled_start() {
        let mut ws = stopped("2025-06-02T18:00:00Z");
        ws.autostart_schedule = Some(BERLIN_WEEKDAYS.into());
        ws.next_start_at = Some(at("2025-06-03T07:30:00Z"));
        let next = upcoming(&ws, at("2025-06-03T07:00:00Z"), HOUR).expect("an autostart");
        assert_eq!(next.at, at("2025-06-03T07:30:00Z"));
        assert_eq!(next.decision.rule, Rule::Autostart);
    }

    #[test]
    fn an_autostart_not_stored_yet_is_found_from_the_schedule() {
        let mut ws = stopped("2025-06-02T18:00:00Z");
        ws.autostart_schedule = Some(BERLIN_WEEKDAYS.into());
        let next = upcoming(&ws, at("2025-06-03T07:00:00Z"), HOUR).expect("an autostart");
        assert_eq!((next.at, next.decision.rule), (at("2025-06-03T07:30:00Z"), Rule::Autostart));
    }

    #[test]
    fn dormancy_and_then_the_delete_within_a_week() {
        let mut ws = stopped("2025-06-01T00:00:00Z");
        ws.last_used_at = at("2025-06-01T00:00:00Z");
        ws.template.time_til_dormant_secs = 3 * 86_400;
        ws.template.time_til_dormant_autodelete_secs = 86_400;
        let week = TimeDelta::days(7);
        let next = upcoming(&ws, at("2025-06-02T00:00:00Z"), week).expect("dormancy");
        // Strictly more than three days unused: the tick after the boundary.
        assert_eq!(next.at, at("2025-06-04T00:01:00Z"));
        assert_eq!(next.decision.rule, Rule::Dormancy);
        let marked = next.decision.mark_dormant.expect("marked dormant");
        ws.dormant_at = Some(marked.dormant_at);
        ws.deleting_at = marked.deleting_at;
        let next = upcoming(&ws, at("2025-06-04T00:01:00Z"), week).expect("the delete");
        assert_eq!(next.decision.reason, Some(Reason::Autodelete));
        assert_eq!(Some(next.at), ws.deleting_at.map(|d| tick_of(d) + TimeDelta::minutes(1)));
    }

    #[test]
    fn a_workspace_nothing_will_happen_to_has_nothing_upcoming() {
        let ws = stopped("2025-06-02T18:00:00Z");
        assert_eq!(upcoming(&ws, at("2025-06-03T00:00:00Z"), TimeDelta::days(7)), None);
    }

    #[test]
    fn a_decision_due_now_is_upcoming_at_the_current_tick() {
        let mut ws = workspace();
        ws.latest_build.deadline = Some(at("2025-06-02T17:00:00Z"));
        let next = upcoming(&ws, at("2025-06-02T18:30:45Z"), HOUR).expect("overdue autostop");
        assert_eq!(next.at, at("2025-06-02T18:30:00Z"));
    }
}
