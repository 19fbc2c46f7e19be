//! One workspace's decision at one tick (rules §2): the preconditions, then the rules in order.

use chrono::{DateTime, Utc};

use super::facts::{schedule_text, tick_of, AutostartSchedule, Facts};
use super::preconditions::{in_flight, next_start_with, settled_before_rules};
use super::rules::{Verdict, Why, RULES};
use super::{Decision, Rule, Workspace};
use crate::schedule::{next_autostart, parse_autostart, CronSchedule, WeekdaySet};

/// Decides for one workspace at `tick` (truncated to the minute here too, so passing `now`
/// is the same as passing its tick).
pub fn decide(workspace: &Workspace, tick: DateTime<Utc>) -> Decision {
    let parsed = schedule_text(workspace).map(parse_autostart);
    let tick = tick_of(tick);
    decide_parsed(
        workspace,
        tick,
        AutostartSchedule::from_parsed(parsed.as_ref()),
        |schedule, days| next_autostart(tick, schedule, days),
    )
}

/// `decide` with the schedule already parsed and `next_after_tick(schedule, days)` =
/// `next_autostart(tick, schedule, days)` (`plan` parses each distinct schedule once and
/// remembers its next autostart after the tick).
pub(crate) fn decide_parsed(
    workspace: &Workspace,
    tick: DateTime<Utc>,
    schedule: AutostartSchedule<'_>,
    next_after_tick: impl FnOnce(&CronSchedule, WeekdaySet) -> Option<DateTime<Utc>>,
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
    let next = next_start_with(&facts, next_after_tick);
    if let Some(why) = in_flight(workspace) {
        return Decision {
            next_start_at: next.at,
            ..undecided(Rule::InFlight, explain(&[&why], next.note.as_deref()))
        };
    }
    // Only the last rule's explanation is ever shown when a rule fires: the others wait here
    // and are joined (not formatted again) when none does.
    let mut passed: [Why; RULES.len()] = Default::default();
    for (rule, why) in RULES.iter().zip(&mut passed) {
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
                    why: explain(&[rule.rule.as_str(), ": ", &fired.why], note),
                };
            }
            Verdict::Passes(text) => *why = text,
        }
    }
    // "no rule fired (autostop: …; autostart: …; …)"
    let mut parts: Vec<&str> = Vec::with_capacity(4 * RULES.len() + 1);
    parts.push("no rule fired (");
    for (index, (rule, why)) in RULES.iter().zip(&passed).enumerate() {
        if index > 0 {
            parts.push("; ");
        }
        parts.extend([rule.rule.as_str(), ": ", why]);
    }
    parts.push(")");
    Decision {
        next_start_at: next.at,
        ..undecided(Rule::None, explain(&parts, next.note.as_deref()))
    }
}

/// The explanation `parts` concatenated, then `. note` when there is one: built in one
/// allocation of the right size (plans explain every workspace of the snapshot).
fn explain(parts: &[&str], note: Option<&str>) -> String {
    let note_len = note.map_or(0, |note| note.len() + 2);
    let mut why =
        String::with_capacity(parts.iter().map(|part| part.len()).sum::<usize>() + note_len);
    for part in parts {
        why.push_str(part);
    }
    if let Some(note) = note {
        why.push_str(". ");
        why.push_str(note);
    }
    why
}
