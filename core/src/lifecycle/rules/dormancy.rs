//! rules §2 rule 4: dormancy.

use super::{latest_build_is, Fired, Verdict};
use crate::build::Transition;
use crate::instant::plus_secs;
use crate::lifecycle::facts::{elapsed_more_than, show, Facts};
use crate::lifecycle::MarkDormant;

/// A workspace unused for more than `time_til_dormant` becomes dormant at `tick`, scheduled
/// for deletion `time_til_dormant_autodelete` later (never when that is 0). A running one is
/// also stopped; a stopped one only gets the mark (reason `dormancy`, no transition).
pub(crate) fn dormancy(facts: &Facts<'_>) -> Verdict {
    let workspace = facts.workspace;
    let template = &workspace.template;
    if let Some(dormant_at) = workspace.dormant_at {
        return Verdict::Passes(format!("dormant since {}", show(dormant_at)).into());
    }
    let ttd = template.time_til_dormant_secs;
    if ttd == 0 {
        return Verdict::Passes("template has no time_til_dormant".into());
    }
    if !elapsed_more_than(workspace.last_used_at, facts.tick, ttd) {
        return Verdict::Passes(
            format!("last used at {}, not more than {ttd}s ago", show(workspace.last_used_at))
                .into(),
        );
    }
    let autodelete = template.time_til_dormant_autodelete_secs;
    let deleting_at = if autodelete == 0 { None } else { plus_secs(facts.tick, autodelete) };
    let running = workspace.latest_build.transition == Transition::Start;
    let mut why = format!("last used at {}, more than {ttd}s ago; ", show(workspace.last_used_at));
    match deleting_at {
        Some(at) => why.push_str(&format!("to be deleted after {}", show(at))),
        None if autodelete == 0 => why.push_str("no auto-delete"),
        // Beyond the last representable instant: it never comes.
        None => why.push_str("auto-delete out of range, never"),
    }
    why.push_str("; ");
    if running {
        why.push_str("stopping it");
    } else {
        why.push_str("no transition (");
        why.push_str(latest_build_is(workspace.latest_build.transition));
        why.push(')');
    }
    Verdict::Fires(Fired {
        transition: running.then_some(Transition::Stop),
        use_active_version: false,
        mark_dormant: Some(MarkDormant { dormant_at: facts.tick, deleting_at }),
        why: why.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::fixtures::{at, stopped, workspace};
    use crate::lifecycle::rules::testing::{check, fires, passes};

    const WEEK: u64 = 7 * 86_400;

    #[test]
    fn marks_a_running_workspace_dormant_and_stops_it_strictly_after_the_ttl() {
        let mut ws = workspace();
        ws.template.time_til_dormant_secs = WEEK;
        ws.template.time_til_dormant_autodelete_secs = 30 * 86_400;
        // Last used 2025-06-02T08:00Z: exactly a week later is not enough.
        assert_eq!(
            passes(check(dormancy, &ws, at("2025-06-09T08:00:00Z"))),
            "last used at 2025-06-02T08:00:00Z, not more than 604800s ago"
        );
        let fired = fires(check(dormancy, &ws, at("2025-06-09T08:01:00Z")));
        assert_eq!(fired.transition, Some(Transition::Stop));
        assert_eq!(
            fired.mark_dormant,
            Some(MarkDormant {
                dormant_at: at("2025-06-09T08:01:00Z"),
                deleting_at: Some(at("2025-07-09T08:01:00Z")),
            })
        );
        assert_eq!(
            fired.why,
            "last used at 2025-06-02T08:00:00Z, more than 604800s ago; \
             to be deleted after 2025-07-09T08:01:00Z; stopping it"
        );
    }

    #[test]
    fn without_auto_delete_deleting_at_stays_null() {
        let mut ws = workspace();
        ws.template.time_til_dormant_secs = 3600;
        let fired = fires(check(dormancy, &ws, at("2025-06-02T10:00:00Z")));
        assert_eq!(
            fired.mark_dormant,
            Some(MarkDormant { dormant_at: at("2025-06-02T10:00:00Z"), deleting_at: None })
        );
        assert!(fired.why.contains("no auto-delete"), "{}", fired.why);
    }

    #[test]
    fn a_stopped_workspace_is_only_marked() {
        let mut ws = stopped("2025-06-02T08:00:00Z");
        ws.template.time_til_dormant_secs = 3600;
        let fired = fires(check(dormancy, &ws, at("2025-06-02T10:00:00Z")));
        assert_eq!(fired.transition, None);
        assert!(fired.mark_dormant.is_some());
        assert!(fired.why.ends_with("no transition (latest build is a stop)"), "{}", fired.why);
    }

    #[test]
    fn never_twice_and_never_without_a_ttl() {
        let tick = at("2025-07-01T00:00:00Z");
        let mut dormant = workspace();
        dormant.template.time_til_dormant_secs = 3600;
        dormant.dormant_at = Some(at("2025-06-20T00:00:00Z"));
        assert_eq!(passes(check(dormancy, &dormant, tick)), "dormant since 2025-06-20T00:00:00Z");
        assert_eq!(passes(check(dormancy, &workspace(), tick)), "template has no time_til_dormant");
    }
}
