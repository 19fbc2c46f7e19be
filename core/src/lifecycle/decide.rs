//! One workspace's decision at one tick (SPEC §2): the preconditions, then the rules in order.

use chrono::{DateTime, Utc};

use super::facts::{schedule_text, tick_of, AutostartSchedule, Facts};
use super::preconditions::{in_flight, next_start, settled_before_rules};
use super::rules::{Verdict, RULES};
use super::{Decision, Rule, Workspace};
use crate::schedule::parse_autostart;

/// Decides for one workspace at `tick` (truncated to the minute here too, so passing `now`
/// is the same as passing its tick).
pub fn decide(workspace: &Workspace, tick: DateTime<Utc>) -> Decision {
    let parsed = schedule_text(workspace).map(parse_autostart);
    decide_parsed(workspace, tick_of(tick), AutostartSchedule::from_parsed(parsed.as_ref()))
}

/// `decide` with the schedule already parsed (`plan` parses each distinct schedule once).
pub(crate) fn decide_parsed(
    workspace: &Workspace,
    tick: DateTime<Utc>,
    schedule: AutostartSchedule<'_>,
) -> Decision {
    let undecided = |rule: Rule, why: String| Decision {
        workspace_id: workspace.id,
        transition: None,
        reason: None,
        use_active_version: false,
        mark_dormant: None,
        next_start_at: None,
        rule,
        why,
    };
    if let Some((rule, why)) = settled_before_rules(workspace) {
        return undecided(rule, why);
    }
    let facts = Facts { workspace, tick, schedule };
    let next = next_start(&facts);
    let with_note = |why: String, note: Option<&str>| match note {
        Some(note) => format!("{why}. {note}"),
        None => why,
    };
    if let Some(why) = in_flight(workspace) {
        return Decision {
            next_start_at: next.at,
            ..undecided(Rule::InFlight, with_note(why, next.note.as_deref()))
        };
    }
    let mut passed = Vec::with_capacity(RULES.len());
    for rule in &RULES {
        match (rule.check)(&facts) {
            Verdict::Fires(fired) => {
                // A workspace that becomes dormant gets no `next_start_at`: dormant workspaces
                // have none (the shell clears it), and the recomputation needs "not dormant".
                let (next_start_at, note) = match (&fired.mark_dormant, next.at) {
                    (Some(_), Some(_)) => {
                        (None, Some("next_start_at not set: the workspace becomes dormant"))
                    }
                    _ => (next.at, next.note.as_deref()),
                };
                return Decision {
                    workspace_id: workspace.id,
                    transition: fired.transition,
                    reason: Some(rule.reason),
                    use_active_version: fired.use_active_version,
                    mark_dormant: fired.mark_dormant,
                    next_start_at,
                    rule: rule.rule,
                    why: with_note(format!("{}: {}", rule.rule.as_str(), fired.why), note),
                };
            }
            Verdict::Passes(why) => passed.push(format!("{}: {why}", rule.rule.as_str())),
        }
    }
    Decision {
        next_start_at: next.at,
        ..undecided(
            Rule::None,
            with_note(format!("no rule fired ({})", passed.join("; ")), next.note.as_deref()),
        )
    }
}
