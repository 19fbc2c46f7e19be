//! rules §2 rule 5: auto-delete.

use super::{Fired, Verdict};
use crate::build::{JobStatus, Transition};
use crate::lifecycle::facts::{elapsed_more_than, show, Facts};

/// A failed delete is retried only this long after its job completed.
const FAILED_DELETE_RETRY_SECS: u64 = 24 * 3600;

/// A dormant workspace is deleted once `tick > deleting_at`; a delete that failed is retried
/// once a day, not every tick.
pub(crate) fn autodelete(facts: &Facts<'_>) -> Verdict {
    let workspace = facts.workspace;
    let build = &workspace.latest_build;
    if !facts.is_dormant() {
        return Verdict::Passes("not dormant".into());
    }
    let Some(deleting_at) = workspace.deleting_at else {
        return Verdict::Passes("no deleting_at".into());
    };
    if workspace.template.time_til_dormant_autodelete_secs == 0 {
        return Verdict::Passes("template has no time_til_dormant_autodelete".into());
    }
    if facts.tick <= deleting_at {
        return Verdict::Passes(format!("deleting_at {} not passed", show(deleting_at)).into());
    }
    let mut why = format!("deleting_at {} passed", show(deleting_at));
    if build.transition == Transition::Delete && build.job_status == JobStatus::Failed {
        let Some(completed) = build.job_completed_at else {
            return Verdict::Passes(
                "the latest delete failed and its job has no completion time".into(),
            );
        };
        if !elapsed_more_than(completed, facts.tick, FAILED_DELETE_RETRY_SECS) {
            return Verdict::Passes(
                format!("the latest delete failed at {}; retried only after 24 h", show(completed))
                    .into(),
            );
        }
        why.push_str(&format!("; retrying the delete that failed at {}", show(completed)));
    }
    Verdict::Fires(Fired::transition(Transition::Delete, why))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::fixtures::{at, stopped};
    use crate::lifecycle::rules::testing::{check, fires, passes};

    fn dormant() -> crate::lifecycle::Workspace {
        let mut ws = stopped("2025-06-01T00:00:00Z");
        ws.template.time_til_dormant_secs = 86_400;
        ws.template.time_til_dormant_autodelete_secs = 86_400;
        ws.dormant_at = Some(at("2025-06-05T00:00:00Z"));
        ws.deleting_at = Some(at("2025-06-06T00:00:00Z"));
        ws
    }

    #[test]
    fn deletes_strictly_after_deleting_at() {
        let ws = dormant();
        assert_eq!(
            passes(check(autodelete, &ws, at("2025-06-06T00:00:00Z"))),
            "deleting_at 2025-06-06T00:00:00Z not passed"
        );
        let fired = fires(check(autodelete, &ws, at("2025-06-06T00:01:00Z")));
        assert_eq!(fired.transition, Some(Transition::Delete));
        assert_eq!(fired.why, "deleting_at 2025-06-06T00:00:00Z passed");
    }

    #[test]
    fn a_failed_delete_is_retried_strictly_after_24_hours() {
        let mut ws = dormant();
        ws.latest_build.transition = Transition::Delete;
        ws.latest_build.job_status = JobStatus::Failed;
        ws.latest_build.created_at = at("2025-06-06T00:01:00Z");
        ws.latest_build.job_completed_at = Some(at("2025-06-06T00:02:00Z"));
        assert_eq!(
            passes(check(autodelete, &ws, at("2025-06-07T00:02:00Z"))),
            "the latest delete failed at 2025-06-06T00:02:00Z; retried only after 24 h"
        );
        let fired = fires(check(autodelete, &ws, at("2025-06-07T00:03:00Z")));
        assert_eq!(fired.transition, Some(Transition::Delete));
        assert!(fired.why.ends_with("retrying the delete that failed at 2025-06-06T00:02:00Z"));
    }

    #[test]
    fn a_canceled_delete_is_retried_at_once() {
        let mut ws = dormant();
        ws.latest_build.transition = Transition::Delete;
        ws.latest_build.job_status = JobStatus::Canceled;
        fires(check(autodelete, &ws, at("2025-06-06T00:01:00Z")));
    }

    #[test]
    fn needs_dormancy_a_deleting_at_and_the_template_setting() {
        let tick = at("2025-07-01T00:00:00Z");
        let mut awake = dormant();
        awake.dormant_at = None;
        assert_eq!(passes(check(autodelete, &awake, tick)), "not dormant");

        let mut no_deleting_at = dormant();
        no_deleting_at.deleting_at = None;
        assert_eq!(passes(check(autodelete, &no_deleting_at, tick)), "no deleting_at");

        let mut disabled = dormant();
        disabled.template.time_til_dormant_autodelete_secs = 0;
        assert_eq!(
            passes(check(autodelete, &disabled, tick)),
            "template has no time_til_dormant_autodelete"
        );
    }
}
