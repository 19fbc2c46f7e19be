//! rules §2 rule 1: autostop.

use super::{latest_build_is, Fired, Verdict};
use crate::build::{JobStatus, Transition};
use crate::lifecycle::facts::{show, Facts};
use crate::lifecycle::OwnerStatus;

/// A running workspace stops when its owner is suspended or its deadline is reached
/// (`tick ≥ deadline`: a whole-minute deadline fires on its own tick, rules §2 "differs").
pub(crate) fn autostop(facts: &Facts<'_>) -> Verdict {
    let build = &facts.workspace.latest_build;
    if build.job_status == JobStatus::Failed {
        return Verdict::Passes("latest build failed".into());
    }
    if facts.is_dormant() {
        return Verdict::Passes("workspace is dormant".into());
    }
    if build.transition != Transition::Start {
        return Verdict::Passes(latest_build_is(build.transition).into());
    }
    if facts.workspace.owner_status == OwnerStatus::Suspended {
        return Verdict::Fires(Fired::transition(Transition::Stop, "owner is suspended"));
    }
    match build.deadline {
        None => Verdict::Passes("no deadline".into()),
        Some(deadline) if facts.tick < deadline => {
            Verdict::Passes(format!("deadline {} not reached", show(deadline)).into())
        }
        Some(deadline) => Verdict::Fires(Fired::transition(
            Transition::Stop,
            format!("deadline {} reached", show(deadline)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::fixtures::{at, workspace};
    use crate::lifecycle::rules::testing::{check, fires, passes};

    #[test]
    fn fires_at_the_deadline_itself() {
        let mut ws = workspace();
        ws.latest_build.deadline = Some(at("2025-06-02T17:00:00Z"));
        let fired = fires(check(autostop, &ws, at("2025-06-02T17:00:00Z")));
        assert_eq!(fired.transition, Some(Transition::Stop));
        assert_eq!(fired.why, "deadline 2025-06-02T17:00:00Z reached");
        assert!(!fired.use_active_version);
        assert_eq!(fired.mark_dormant, None);
    }

    #[test]
    fn waits_for_the_tick_that_reaches_a_mid_minute_deadline() {
        let mut ws = workspace();
        ws.latest_build.deadline = Some(at("2025-06-02T17:00:30Z"));
        assert_eq!(
            passes(check(autostop, &ws, at("2025-06-02T17:00:00Z"))),
            "deadline 2025-06-02T17:00:30Z not reached"
        );
        fires(check(autostop, &ws, at("2025-06-02T17:01:00Z")));
    }

    #[test]
    fn a_suspended_owner_stops_a_running_workspace_without_a_deadline() {
        let mut ws = workspace();
        ws.owner_status = OwnerStatus::Suspended;
        let fired = fires(check(autostop, &ws, at("2025-06-02T09:00:00Z")));
        assert_eq!(fired.transition, Some(Transition::Stop));
        assert_eq!(fired.why, "owner is suspended");
    }

    #[test]
    fn a_dormant_owner_is_not_a_suspended_one() {
        let mut ws = workspace();
        ws.owner_status = OwnerStatus::Dormant;
        assert_eq!(passes(check(autostop, &ws, at("2025-06-02T09:00:00Z"))), "no deadline");
    }

    #[test]
    fn never_stops_a_stopped_failed_or_dormant_workspace() {
        let tick = at("2025-06-02T18:00:00Z");
        let mut ws = workspace();
        ws.owner_status = OwnerStatus::Suspended;
        ws.latest_build.deadline = Some(at("2025-06-02T17:00:00Z"));

        let mut stopped = ws.clone();
        stopped.latest_build.transition = Transition::Stop;
        assert_eq!(passes(check(autostop, &stopped, tick)), "latest build is a stop");

        let mut failed = ws.clone();
        failed.latest_build.job_status = JobStatus::Failed;
        assert_eq!(passes(check(autostop, &failed, tick)), "latest build failed");

        let mut dormant = ws;
        dormant.dormant_at = Some(at("2025-06-01T00:00:00Z"));
        assert_eq!(passes(check(autostop, &dormant, tick)), "workspace is dormant");
    }

    #[test]
    fn a_canceled_start_past_its_deadline_still_stops() {
        // Only `failed` is excluded by rules §2 rule 1.
        let mut ws = workspace();
        ws.latest_build.job_status = JobStatus::Canceled;
        ws.latest_build.deadline = Some(at("2025-06-02T17:00:00Z"));
        fires(check(autostop, &ws, at("2025-06-02T17:00:00Z")));
    }
}
