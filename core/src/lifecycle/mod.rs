//! Lifecycle decisions (rules §2): one decision per workspace per tick.
//!
//! `plan` decides every workspace of a snapshot at `tick` (= `now` truncated to the minute).
//! Each decision depends on its own workspace only: `decide` runs the preconditions
//! (`preconditions.rs`), then the five rules of `rules/` in the rulebook's order (docs/rules.md §2), and says why.

mod decide;
mod decision;
mod facts;
#[cfg(test)]
mod fixtures;
mod preconditions;
mod rules;
mod snapshot;
mod upcoming;

pub use decide::decide;
pub use decision::{Decision, MarkDormant, Reason, Rule};
pub use facts::tick_of;
pub use snapshot::{
    AutomaticUpdates, LatestBuild, LifecycleSnapshot, OwnerStatus, Template, Workspace,
};
pub use upcoming::{upcoming, Upcoming};

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::schedule::{next_autostart, parse_autostart, CronSchedule, ScheduleError, WeekdaySet};
use facts::{schedule_text, AutostartSchedule};

/// Decides for every workspace of the snapshot, in input order.
pub fn plan(now: DateTime<Utc>, snapshot: &LifecycleSnapshot) -> Vec<Decision> {
    let tick = tick_of(now);
    // Most workspaces share a handful of schedules: parse each distinct text once, and find
    // its next autostart after the tick (the same for every workspace) once per set of days.
    let mut slots: HashMap<&str, usize> = HashMap::new();
    let mut schedules: Vec<Result<CronSchedule, ScheduleError>> = Vec::new();
    let mut next_after_tick: Vec<NextAfterTick> = Vec::new();
    let mut decisions = Vec::with_capacity(snapshot.workspaces.len());
    for workspace in &snapshot.workspaces {
        let slot = schedule_text(workspace).map(|text| {
            *slots.entry(text).or_insert_with(|| {
                schedules.push(parse_autostart(text));
                next_after_tick.push(NextAfterTick::default());
                schedules.len() - 1
            })
        });
        let decision = match slot {
            None => decide::decide_parsed(workspace, tick, AutostartSchedule::Unset, |_, _| None),
            Some(slot) => decide::decide_parsed(
                workspace,
                tick,
                AutostartSchedule::from_parsed(schedules.get(slot)),
                |schedule, days| match next_after_tick.get_mut(slot) {
                    Some(memo) => memo.get(tick, schedule, days),
                    None => next_autostart(tick, schedule, days),
                },
            ),
        };
        decisions.push(decision);
    }
    decisions
}

/// `next_autostart(tick, schedule, days)` of one schedule, by set of allowed days (a template
/// allows one set, so this list stays short).
#[derive(Debug, Default)]
struct NextAfterTick(Vec<(WeekdaySet, Option<DateTime<Utc>>)>);

impl NextAfterTick {
    fn get(
        &mut self,
        tick: DateTime<Utc>,
        schedule: &CronSchedule,
        days: WeekdaySet,
    ) -> Option<DateTime<Utc>> {
        if let Some((_, next)) = self.0.iter().find(|(seen, _)| *seen == days) {
            return *next;
        }
        let next = next_autostart(tick, schedule, days);
        self.0.push((days, next));
        next
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{at, stopped, workspace, ACTIVE_VERSION, BERLIN_WEEKDAYS};
    use super::*;
    use crate::build::{JobStatus, Transition};

    #[test]
    fn one_decision_per_workspace_in_input_order_at_the_tick() {
        let mut first = workspace();
        first.latest_build.deadline = Some(at("2025-06-02T17:00:00Z"));
        let mut second = workspace();
        second.id = uuid::Uuid::from_u128(0x2);
        let snapshot = LifecycleSnapshot { workspaces: vec![first, second] };
        // 17:00:59 is still the 17:00 tick.
        let decisions = plan(at("2025-06-02T17:00:59Z"), &snapshot);
        assert_eq!(decisions.len(), 2);
        assert_eq!(decisions[0].workspace_id, uuid::Uuid::from_u128(0x1));
        assert_eq!(decisions[0].transition, Some(Transition::Stop));
        assert_eq!(decisions[0].reason, Some(Reason::Autostop));
        assert_eq!(decisions[1].workspace_id, uuid::Uuid::from_u128(0x2));
        assert_eq!(decisions[1].transition, None);
        assert_eq!(decisions[1].rule, Rule::None);
    }

    #[test]
    fn plan_and_decide_agree() {
        let mut ws = stopped("2025-06-02T18:00:00Z");
        ws.autostart_schedule = Some(BERLIN_WEEKDAYS.into());
        let now = at("2025-06-03T07:30:12Z");
        let snapshot = LifecycleSnapshot { workspaces: vec![ws.clone(), ws.clone()] };
        assert_eq!(plan(now, &snapshot), vec![decide(&ws, now), decide(&ws, now)]);
    }

    #[test]
    fn a_prebuild_gets_an_empty_entry_that_says_why() {
        let mut ws = workspace();
        ws.is_prebuild = true;
        ws.owner_status = OwnerStatus::Suspended;
        ws.autostart_schedule = Some(BERLIN_WEEKDAYS.into());
        ws.template.time_til_dormant_secs = 60;
        let decision = decide(&ws, at("2025-07-01T00:00:00Z"));
        assert_eq!(
            (decision.transition, decision.reason, decision.mark_dormant, decision.next_start_at),
            (None, None, None, None)
        );
        assert!(!decision.use_active_version);
        assert_eq!(decision.rule, Rule::Prebuild);
        assert!(decision.why.contains("reconciler"), "{}", decision.why);
        assert!(!decision.has_effect());
    }

    #[test]
    fn a_build_in_flight_only_gets_its_next_start_at() {
        let mut ws = workspace();
        ws.owner_status = OwnerStatus::Suspended;
        ws.latest_build.deadline = Some(at("2025-06-02T09:00:00Z"));
        ws.template.time_til_dormant_secs = 60;
        ws.autostart_schedule = Some(BERLIN_WEEKDAYS.into());
        for status in [JobStatus::Pending, JobStatus::Running, JobStatus::Canceling] {
            ws.latest_build.job_status = status;
            let decision = decide(&ws, at("2025-06-02T10:00:00Z"));
            assert_eq!(decision.rule, Rule::InFlight);
            assert_eq!(
                (decision.transition, decision.reason, decision.mark_dormant),
                (None, None, None)
            );
            assert_eq!(decision.next_start_at, Some(at("2025-06-03T07:30:00Z")));
            assert_eq!(
                decision.why,
                format!(
                    "in flight: the latest build (start) is {}, nothing else decided. \
                     next_start_at = 2025-06-03T07:30:00Z",
                    status.as_str()
                )
            );
        }
    }

    #[test]
    fn the_first_matching_rule_wins() {
        // Past its deadline and unused for long: autostop (rule 1) beats dormancy (rule 4).
        let mut ws = workspace();
        ws.latest_build.deadline = Some(at("2025-06-02T17:00:00Z"));
        ws.template.time_til_dormant_secs = 3600;
        let decision = decide(&ws, at("2025-06-03T00:00:00Z"));
        assert_eq!(decision.reason, Some(Reason::Autostop));
        assert_eq!(decision.mark_dormant, None);
        assert_eq!(decision.why, "autostop: deadline 2025-06-02T17:00:00Z reached");

        // A failed start past the failure TTL and unused: failedstop (3) beats dormancy (4).
        ws.latest_build.job_status = JobStatus::Failed;
        ws.template.failure_ttl_secs = 60;
        let decision = decide(&ws, at("2025-06-03T00:00:00Z"));
        assert_eq!(decision.reason, Some(Reason::Failedstop));

        // Without a failure TTL the failed start falls through to dormancy, which stops it.
        ws.template.failure_ttl_secs = 0;
        let decision = decide(&ws, at("2025-06-03T00:00:00Z"));
        assert_eq!(decision.reason, Some(Reason::Dormancy));
        assert_eq!(decision.transition, Some(Transition::Stop));
    }

    #[test]
    fn no_rule_explains_every_rule() {
        let decision = decide(&stopped("2025-06-02T18:00:00Z"), at("2025-06-03T00:00:00Z"));
        assert_eq!(decision.rule, Rule::None);
        assert_eq!(
            decision.why,
            "no rule fired (autostop: latest build is a stop; autostart: no autostart schedule; \
             failedstop: template has no failure TTL; dormancy: template has no time_til_dormant; \
             autodelete: not dormant)"
        );
    }

    #[test]
    fn autostart_with_a_missing_next_start_at_sets_the_following_one() {
        let mut ws = stopped("2025-06-02T18:00:00Z");
        ws.autostart_schedule = Some(BERLIN_WEEKDAYS.into());
        ws.template.require_active_version = true;
        let decision = decide(&ws, at("2025-06-03T07:30:00Z"));
        assert_eq!(decision.transition, Some(Transition::Start));
        assert_eq!(decision.reason, Some(Reason::Autostart));
        assert!(decision.use_active_version);
        assert_eq!(decision.next_start_at, Some(at("2025-06-04T07:30:00Z")));
        assert_ne!(ws.latest_build.template_version_id, ACTIVE_VERSION);
    }

    #[test]
    fn becoming_dormant_drops_the_recomputed_next_start_at() {
        let mut ws = stopped("2025-06-02T18:00:00Z");
        ws.autostart_schedule = Some(BERLIN_WEEKDAYS.into());
        ws.template.user_autostart_enabled = false;
        ws.template.time_til_dormant_secs = 3600;
        let decision = decide(&ws, at("2025-06-03T00:00:00Z"));
        assert_eq!(decision.reason, Some(Reason::Dormancy));
        assert_eq!(decision.transition, None);
        assert_eq!(decision.next_start_at, None);
        assert!(
            decision.why.ends_with("next_start_at not set: the workspace becomes dormant"),
            "{}",
            decision.why
        );
    }

    /// Issue 18 item 1: every rule at the ends of chrono's range, with a zoned schedule:
    /// decided and explained, never a panic.
    #[test]
    fn decisions_at_the_ends_of_time_never_panic() {
        use chrono::{DateTime, Utc};
        for now in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
            for schedule in ["CRON_TZ=America/New_York 0 9 * * *", "CRON_TZ=Asia/Tokyo 0 9 * * *"] {
                let mut ws = stopped("2025-06-02T18:00:00Z");
                ws.latest_build.created_at = now;
                ws.last_used_at = now;
                ws.autostart_schedule = Some(schedule.into());
                ws.template.time_til_dormant_secs = 60;
                ws.template.time_til_dormant_autodelete_secs = u64::MAX;
                let snapshot = LifecycleSnapshot { workspaces: vec![ws] };
                let decisions = plan(now, &snapshot);
                assert!(!decisions[0].why.is_empty());
            }
        }
    }

    #[test]
    fn a_deleted_workspace_is_left_alone() {
        let mut ws = stopped("2025-06-02T18:00:00Z");
        ws.latest_build.transition = Transition::Delete;
        ws.dormant_at = Some(at("2025-06-01T00:00:00Z"));
        ws.deleting_at = Some(at("2025-06-02T00:00:00Z"));
        ws.template.time_til_dormant_autodelete_secs = 86_400;
        let decision = decide(&ws, at("2025-06-03T00:00:00Z"));
        assert_eq!(decision.rule, Rule::Deleted);
        assert!(!decision.has_effect());
    }
}
