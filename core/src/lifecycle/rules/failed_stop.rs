//! rules §2 rule 3: failed-build stop.

use super::{Fired, Verdict};
use crate::build::{JobStatus, Transition};
use crate::lifecycle::facts::{elapsed_more_than, show, Facts};

/// A start or stop whose job failed more than `failure_ttl` ago is stopped (again), so a
/// half-built workspace does not keep its resources. Reason `failedstop`, not `autostop`
/// (rules §2 "differs").
pub(crate) fn failed_stop(facts: &Facts<'_>) -> Verdict {
    let build = &facts.workspace.latest_build;
    let ttl = facts.workspace.template.failure_ttl_secs;
    if ttl == 0 {
        return Verdict::Passes("template has no failure TTL".into());
    }
    if build.job_status != JobStatus::Failed {
        return Verdict::Passes("latest build did not fail".into());
    }
    if build.transition == Transition::Delete {
        return Verdict::Passes("the failed build is a delete".into());
    }
    let Some(completed) = build.job_completed_at else {
        return Verdict::Passes("the failed job has no completion time".into());
    };
    if !elapsed_more_than(completed, facts.tick, ttl) {
        return Verdict::Passes(
            format!(
                "{} failed at {}, not more than {ttl}s ago",
                build.transition.as_str(),
                show(completed)
            )
            .into(),
        );
    }
    Verdict::Fires(Fired::transition(
        Transition::Stop,
        format!(
            "{} failed at {}, more than {ttl}s ago",
            build.transition.as_str(),
            show(completed)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::fixtures::{at, stopped, workspace};
    use crate::lifecycle::rules::testing::{check, fires, passes};

    fn failed_start() -> crate::lifecycle::Workspace {
        let mut ws = workspace();
        ws.latest_build.job_status = JobStatus::Failed;
        ws.latest_build.job_completed_at = Some(at("2025-06-02T08:01:00Z"));
        ws.template.failure_ttl_secs = 3600;
        ws
    }

    #[test]
    fn fires_only_strictly_after_the_failure_ttl() {
        let ws = failed_start();
        assert_eq!(
            passes(check(failed_stop, &ws, at("2025-06-02T09:01:00Z"))),
            "start failed at 2025-06-02T08:01:00Z, not more than 3600s ago"
        );
        let fired = fires(check(failed_stop, &ws, at("2025-06-02T09:02:00Z")));
        assert_eq!(fired.transition, Some(Transition::Stop));
        assert_eq!(fired.why, "start failed at 2025-06-02T08:01:00Z, more than 3600s ago");
    }

    #[test]
    fn a_failed_stop_is_stopped_again() {
        let mut ws = stopped("2025-06-02T08:00:00Z");
        ws.latest_build.job_status = JobStatus::Failed;
        ws.template.failure_ttl_secs = 60;
        let fired = fires(check(failed_stop, &ws, at("2025-06-02T08:03:00Z")));
        assert_eq!(fired.transition, Some(Transition::Stop));
    }

    #[test]
    fn needs_a_ttl_a_failure_of_a_start_or_stop_and_a_completion_time() {
        let tick = at("2025-06-03T00:00:00Z");
        let mut no_ttl = failed_start();
        no_ttl.template.failure_ttl_secs = 0;
        assert_eq!(passes(check(failed_stop, &no_ttl, tick)), "template has no failure TTL");

        let mut succeeded = failed_start();
        succeeded.latest_build.job_status = JobStatus::Succeeded;
        assert_eq!(passes(check(failed_stop, &succeeded, tick)), "latest build did not fail");

        let mut delete = failed_start();
        delete.latest_build.transition = Transition::Delete;
        assert_eq!(passes(check(failed_stop, &delete, tick)), "the failed build is a delete");

        let mut no_completion = failed_start();
        no_completion.latest_build.job_completed_at = None;
        assert_eq!(
            passes(check(failed_stop, &no_completion, tick)),
            "the failed job has no completion time"
        );
    }
}
