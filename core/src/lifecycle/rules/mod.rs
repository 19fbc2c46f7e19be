//! The five lifecycle rules of rules §2, one file each. A rule looks at the facts of one
//! workspace at one tick and either fires or says why it does not.

mod autodelete;
mod autostart;
mod autostop;
mod dormancy;
mod failed_stop;

use std::borrow::Cow;

use super::facts::Facts;
use super::{MarkDormant, Reason, Rule};
use crate::build::Transition;

/// A rule's explanation: fixed text is borrowed, only text with values in it is formatted
/// (most explanations of rules that pass are thrown away when a later rule fires).
pub(crate) type Why = Cow<'static, str>;

/// What a rule that fires decides.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Fired {
    pub transition: Option<Transition>,
    pub use_active_version: bool,
    pub mark_dormant: Option<MarkDormant>,
    pub why: Why,
}

impl Fired {
    pub fn transition(transition: Transition, why: impl Into<Why>) -> Fired {
        Fired { transition: Some(transition), why: why.into(), ..Fired::default() }
    }
}

/// A rule's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Fires(Fired),
    /// The rule does not apply, and why (for the explanation of a decision with no rule).
    Passes(Why),
}

/// "latest build is a …", without formatting.
pub(crate) fn latest_build_is(transition: Transition) -> &'static str {
    match transition {
        Transition::Start => "latest build is a start",
        Transition::Stop => "latest build is a stop",
        Transition::Delete => "latest build is a delete",
    }
}

/// A rule: its label, the build reason it gives, and its test.
pub(crate) struct LifecycleRule {
    pub rule: Rule,
    pub reason: Reason,
    pub check: fn(&Facts<'_>) -> Verdict,
}

/// rules §2, in order: the first rule that fires wins.
pub(crate) const RULES: [LifecycleRule; 5] = [
    LifecycleRule { rule: Rule::Autostop, reason: Reason::Autostop, check: autostop::autostop },
    LifecycleRule { rule: Rule::Autostart, reason: Reason::Autostart, check: autostart::autostart },
    LifecycleRule {
        rule: Rule::Failedstop,
        reason: Reason::Failedstop,
        check: failed_stop::failed_stop,
    },
    LifecycleRule { rule: Rule::Dormancy, reason: Reason::Dormancy, check: dormancy::dormancy },
    LifecycleRule {
        rule: Rule::Autodelete,
        reason: Reason::Autodelete,
        check: autodelete::autodelete,
    },
];

#[cfg(test)]
pub(crate) mod testing {
    use chrono::{DateTime, Utc};

    use super::Verdict;
    use crate::lifecycle::facts::{schedule_text, AutostartSchedule, Facts};
    use crate::lifecycle::Workspace;
    use crate::schedule::parse_autostart;

    /// Runs one rule on `workspace` at `tick`, parsing its schedule as `plan` does.
    pub fn check(
        rule: fn(&Facts<'_>) -> Verdict,
        workspace: &Workspace,
        tick: DateTime<Utc>,
    ) -> Verdict {
        let parsed = schedule_text(workspace).map(parse_autostart);
        let facts =
            Facts { workspace, tick, schedule: AutostartSchedule::from_parsed(parsed.as_ref()) };
        rule(&facts)
    }

    /// The `why` of a rule that must pass.
    pub fn passes(verdict: Verdict) -> String {
        match verdict {
            Verdict::Passes(why) => why.into_owned(),
            Verdict::Fires(fired) => panic!("expected the rule to pass, it fired: {fired:?}"),
        }
    }

    /// What a rule that must fire decided.
    pub fn fires(verdict: Verdict) -> super::Fired {
        match verdict {
            Verdict::Fires(fired) => fired,
            Verdict::Passes(why) => panic!("expected the rule to fire, it passed: {why}"),
        }
    }
}
