//! The activity bump (rules §3 "Activity").

use chrono::{DateTime, TimeDelta, Utc};

use super::deadline::effective_ttl;
use super::{ActivityReport, ActivityResult};
use crate::build::Transition;
use crate::instant::duration;

/// The plain inputs of rules §3's activity bump, for callers without a replay entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivityInputs {
    /// `A`: when the session was reported.
    pub at: DateTime<Utc>,
    pub is_prebuild: bool,
    /// The latest build.
    pub transition: Transition,
    pub job_completed: bool,
    pub deadline: Option<DateTime<Utc>>,
    pub max_deadline: Option<DateTime<Utc>>,
    /// 0 = the workspace has no TTL.
    pub workspace_ttl_secs: u64,
    /// The next allowed autostart after `at`, if any.
    pub next_autostart: Option<DateTime<Utc>>,
    pub default_ttl_secs: u64,
    pub user_autostop_enabled: bool,
    pub activity_bump_secs: u64,
}

/// rules §3: the latest build's deadline after activity at `A` (unchanged when no bump
/// applies). A bump never moves the deadline backwards: if it already lies beyond
/// `max_deadline` (which a consistent build never has) it is left alone.
pub fn bumped_deadline(inputs: &ActivityInputs) -> Option<DateTime<Utc>> {
    let deadline = inputs.deadline?;
    let bump = |inputs: &ActivityInputs| -> Option<DateTime<Utc>> {
        if inputs.is_prebuild
            || inputs.transition != Transition::Start
            || !inputs.job_completed
            || inputs.activity_bump_secs == 0
        {
            return None;
        }
        let at = inputs.at;
        let activity_bump = duration(inputs.activity_bump_secs)?;
        // Crossing the next autostart: as if autostarted there, a full TTL after it.
        let crossing = inputs
            .next_autostart
            .filter(|&n| at < n && Some(n) < at.checked_add_signed(activity_bump));
        let interval = match crossing {
            Some(n) => {
                let ttl = effective_ttl(
                    inputs.user_autostop_enabled,
                    inputs.default_ttl_secs,
                    inputs.workspace_ttl_secs,
                )
                .ok()?
                .unwrap_or(TimeDelta::zero());
                (n - at).checked_add(&ttl)?
            }
            None => activity_bump,
        };
        // Only once 5% of the interval has elapsed: deadline − 0.95 × interval < A.
        if deadline.checked_sub_signed(interval.checked_mul(19)?.checked_div(20)?)? >= at {
            return None;
        }
        let raised = deadline.max(at.checked_add_signed(interval)?);
        Some(match inputs.max_deadline {
            Some(max) => raised.min(max),
            None => raised,
        })
    };
    Some(bump(inputs).map_or(deadline, |bumped| bumped.max(deadline)))
}

/// rules §3 for a replay entry.
pub fn bump_activity(input: &ActivityReport) -> ActivityResult {
    let inputs = ActivityInputs {
        at: input.at,
        is_prebuild: input.is_prebuild,
        transition: input.build.transition,
        job_completed: input.build.job_completed,
        deadline: input.build.deadline,
        max_deadline: input.build.max_deadline,
        workspace_ttl_secs: input.workspace_ttl_secs,
        next_autostart: input.next_autostart,
        default_ttl_secs: input.template.default_ttl_secs,
        user_autostop_enabled: input.template.user_autostop_enabled,
        activity_bump_secs: input.template.activity_bump_secs,
    };
    ActivityResult { id: input.id.clone(), deadline: bumped_deadline(&inputs) }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::t;

    /// Activity at `at` on a started workspace with deadline `deadline`, a 1 h bump and an
    /// 8 h TTL.
    fn inputs(at: &str, deadline: &str) -> ActivityInputs {
        ActivityInputs {
            at: t(at),
            is_prebuild: false,
            transition: Transition::Start,
            job_completed: true,
            deadline: Some(t(deadline)),
            max_deadline: None,
            workspace_ttl_secs: 8 * 3600,
            next_autostart: None,
            default_ttl_secs: 3600,
            user_autostop_enabled: true,
            activity_bump_secs: 3600,
        }
    }

    #[test]
    fn bumps_to_an_hour_after_the_activity() {
        assert_eq!(
            bumped_deadline(&inputs("2025-06-02T10:00:00Z", "2025-06-02T10:30:00Z")),
            Some(t("2025-06-02T11:00:00Z"))
        );
    }

    #[test]
    fn five_percent_threshold() {
        // Bump 1 h: 0.95 h = 57 min. Deadline 10:57 at A = 10:00 is not < A → no bump.
        let i = inputs("2025-06-02T10:00:00Z", "2025-06-02T10:57:00Z");
        assert_eq!(bumped_deadline(&i), Some(t("2025-06-02T10:57:00Z")));
        // One second earlier it is, and the deadline moves to 11:00.
        let i = inputs("2025-06-02T10:00:00Z", "2025-06-02T10:56:59Z");
        assert_eq!(bumped_deadline(&i), Some(t("2025-06-02T11:00:00Z")));
    }

    #[test]
    fn capped_at_max_deadline_and_never_decreasing() {
        let i = ActivityInputs {
            max_deadline: Some(t("2025-06-02T10:40:00Z")),
            ..inputs("2025-06-02T10:00:00Z", "2025-06-02T10:30:00Z")
        };
        assert_eq!(bumped_deadline(&i), Some(t("2025-06-02T10:40:00Z")));
        // A deadline already past the max deadline stays where it is.
        let i = ActivityInputs {
            max_deadline: Some(t("2025-06-02T10:10:00Z")),
            ..inputs("2025-06-02T10:00:00Z", "2025-06-02T10:30:00Z")
        };
        assert_eq!(bumped_deadline(&i), Some(t("2025-06-02T10:30:00Z")));
    }

    #[test]
    fn crossing_the_next_autostart() {
        // Activity at 08:30, autostart at 09:00 (within the 1 h bump): interval = 30 min +
        // 8 h TTL → 17:00.
        let i = ActivityInputs {
            next_autostart: Some(t("2025-06-02T09:00:00Z")),
            ..inputs("2025-06-02T08:30:00Z", "2025-06-02T08:45:00Z")
        };
        assert_eq!(bumped_deadline(&i), Some(t("2025-06-02T17:00:00Z")));
        // The TTL is the template default when users may not set their own.
        let j = ActivityInputs { user_autostop_enabled: false, ..i };
        assert_eq!(bumped_deadline(&j), Some(t("2025-06-02T10:00:00Z")));
        // An autostart beyond A + bump (or at it) is not crossed.
        let k = ActivityInputs { next_autostart: Some(t("2025-06-02T09:30:00Z")), ..i };
        assert_eq!(bumped_deadline(&k), Some(t("2025-06-02T09:30:00Z")));
        // Nor one at A itself.
        let k = ActivityInputs { next_autostart: Some(t("2025-06-02T08:30:00Z")), ..i };
        assert_eq!(bumped_deadline(&k), Some(t("2025-06-02T09:30:00Z")));
    }

    #[test]
    fn no_bump_cases() {
        let base = inputs("2025-06-02T10:00:00Z", "2025-06-02T10:30:00Z");
        let unchanged = Some(t("2025-06-02T10:30:00Z"));
        for i in [
            ActivityInputs { is_prebuild: true, ..base },
            ActivityInputs { transition: Transition::Stop, ..base },
            ActivityInputs { job_completed: false, ..base },
            ActivityInputs { activity_bump_secs: 0, ..base },
        ] {
            assert_eq!(bumped_deadline(&i), unchanged, "{i:?}");
        }
        assert_eq!(bumped_deadline(&ActivityInputs { deadline: None, ..base }), None);
    }
}
