//! The action list of one preset (rules §4 "Actions, in this order").

use uuid::Uuid;

use super::backoff::Backoff;
use super::counter;
use super::rows::{InFlight, Split};
use super::{Action, FailedPrebuild, PresetStatus, RunningPrebuild, Withheld, WithheldReason};

/// What the rules derived about a preset, from which its actions follow.
#[derive(Debug)]
pub(crate) struct Facts<'a> {
    pub active: bool,
    pub status: PresetStatus,
    /// Every row of the preset, oldest first.
    pub rows: &'a [&'a RunningPrebuild],
    pub split: &'a Split<'a>,
    pub flight: InFlight,
    pub desired: u32,
    pub backoff: Option<Backoff>,
    pub hard_limited: bool,
    /// `config.max_pending_creates_per_preset` (0 = no cap).
    pub max_pending_creates: u32,
}

/// The actions, in the order they must be applied, and what was withheld.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Planned {
    pub actions: Vec<Action>,
    pub withheld: Option<Withheld>,
}

/// rules §4 state `extraneous`: `max(|R| − D, 0)`, 0 if inactive.
pub(crate) fn extraneous(facts: &Facts<'_>) -> usize {
    if facts.active {
        facts.split.fresh.len().saturating_sub(to_usize(facts.desired))
    } else {
        0
    }
}

/// The actions of `facts`, with `failed` (the failed prebuilds rules §4 "Failed prebuilds"
/// deletes) deleted after the other rows and before any create; never withheld.
pub(crate) fn actions(facts: &Facts<'_>, failed: &[&FailedPrebuild]) -> Planned {
    let mut planned = Planned::default();
    if !facts.active {
        // 1. Inactive: cancel pending first builds, then delete every row, expired or not.
        // Backoff, the hard limit and statuses do not apply.
        if facts.flight.pending_first_build {
            planned.actions.push(Action::CancelPending);
        }
        push_delete(&mut planned.actions, facts.rows);
        push_delete_failed(&mut planned.actions, failed);
        return planned;
    }
    // 3. Backoff in force leads the list, whether or not a create is needed.
    if let Some(backoff) = facts.backoff {
        planned.actions.push(Action::Backoff { until: backoff.until });
    }
    // 2. Expired rows, then the oldest extraneous rows of R (R is oldest first).
    push_delete(&mut planned.actions, &facts.split.expired);
    push_delete(&mut planned.actions, &facts.split.fresh[..extraneous(facts)]);
    push_delete_failed(&mut planned.actions, failed);
    let (count, withheld) = create_count(facts);
    if count > 0 {
        planned.actions.push(Action::Create { count });
    }
    planned.withheld = withheld;
    // 3. `set_status` last, only between healthy and hard_limited.
    let wanted = if facts.hard_limited { PresetStatus::HardLimited } else { PresetStatus::Healthy };
    if facts.status != PresetStatus::ValidationFailed && facts.status != wanted {
        planned.actions.push(Action::SetStatus { status: wanted });
    }
    planned
}

/// rules §4: `max(D − |R| − starting, 0)`, withheld entirely under backoff, the hard limit or
/// `validation_failed`, and capped at `max(m − starting, 0)` when m > 0.
fn create_count(facts: &Facts<'_>) -> (u32, Option<Withheld>) {
    let have = facts.split.fresh.len().saturating_add(facts.flight.starting);
    let needed = counter(to_usize(facts.desired).saturating_sub(have));
    if needed == 0 {
        return (0, None);
    }
    let mut reasons = Vec::new();
    if facts.backoff.is_some() {
        reasons.push(WithheldReason::Backoff);
    }
    if facts.hard_limited {
        reasons.push(WithheldReason::HardLimited);
    }
    if facts.status == PresetStatus::ValidationFailed {
        reasons.push(WithheldReason::ValidationFailed);
    }
    if !reasons.is_empty() {
        return (0, Some(Withheld { count: needed, reasons }));
    }
    let m = facts.max_pending_creates;
    if m > 0 {
        let room = m.saturating_sub(counter(facts.flight.starting));
        if room < needed {
            let withheld =
                Withheld { count: needed - room, reasons: vec![WithheldReason::PendingCap] };
            return (room, Some(withheld));
        }
    }
    (needed, None)
}

fn push_delete(actions: &mut Vec<Action>, rows: &[&RunningPrebuild]) {
    if !rows.is_empty() {
        let workspace_ids: Vec<Uuid> = rows.iter().map(|row| row.workspace_id).collect();
        actions.push(Action::Delete { workspace_ids });
    }
}

fn push_delete_failed(actions: &mut Vec<Action>, rows: &[&FailedPrebuild]) {
    if !rows.is_empty() {
        let workspace_ids: Vec<Uuid> = rows.iter().map(|row| row.workspace_id).collect();
        actions.push(Action::Delete { workspace_ids });
    }
}

fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prebuilds::rows::tests::{id, running, t};

    fn rows(n: u128) -> Vec<RunningPrebuild> {
        (1..=n).map(|i| running(i, 1, &format!("2025-06-02T08:{:02}:00Z", 60 - i))).collect()
    }

    fn facts<'a>(all: &'a [&'a RunningPrebuild], split: &'a Split<'a>, desired: u32) -> Facts<'a> {
        Facts {
            active: true,
            status: PresetStatus::Healthy,
            rows: all,
            split,
            flight: InFlight::default(),
            desired,
            backoff: None,
            hard_limited: false,
            max_pending_creates: 0,
        }
    }

    fn fresh_split<'a>(all: &[&'a RunningPrebuild]) -> Split<'a> {
        let mut fresh = all.to_vec();
        crate::prebuilds::rows::order_running(&mut fresh);
        Split { fresh, expired: Vec::new() }
    }

    fn in_force() -> Option<Backoff> {
        Some(Backoff {
            until: t("2025-06-02T09:05:00Z"),
            changes_at: Some(t("2025-06-02T09:05:01Z")),
        })
    }

    #[test]
    fn creates_the_shortfall_minus_starting() {
        let owned = rows(1);
        let all: Vec<&RunningPrebuild> = owned.iter().collect();
        let split = fresh_split(&all);
        let mut f = facts(&all, &split, 4);
        f.flight.starting = 1;
        assert_eq!(actions(&f, &[]).actions, [Action::Create { count: 2 }]);
        f.flight.starting = 5;
        assert_eq!(actions(&f, &[]), Planned::default(), "no create with count 0");
    }

    #[test]
    fn deletes_the_oldest_extraneous_rows() {
        let owned = rows(3); // workspace 3 is the oldest, then 2, then 1
        let all: Vec<&RunningPrebuild> = owned.iter().collect();
        let split = fresh_split(&all);
        let f = facts(&all, &split, 1);
        assert_eq!(extraneous(&f), 2);
        assert_eq!(
            actions(&f, &[]).actions,
            [Action::Delete { workspace_ids: vec![id(3), id(2)] }]
        );
    }

    #[test]
    fn expired_rows_are_deleted_first_and_replaced() {
        let owned = rows(2);
        let split = Split { fresh: vec![&owned[0]], expired: vec![&owned[1]] };
        let all: Vec<&RunningPrebuild> = owned.iter().collect();
        let f = facts(&all, &split, 2);
        assert_eq!(
            actions(&f, &[]).actions,
            [Action::Delete { workspace_ids: vec![id(2)] }, Action::Create { count: 1 }]
        );
    }

    #[test]
    fn inactive_cancels_pending_first_builds_then_deletes_everything() {
        let owned = rows(2);
        let split = Split { fresh: vec![&owned[0]], expired: vec![&owned[1]] };
        let all: Vec<&RunningPrebuild> = vec![&owned[1], &owned[0]];
        let mut f = facts(&all, &split, 0);
        f.active = false;
        f.status = PresetStatus::HardLimited;
        f.hard_limited = false;
        f.backoff = None;
        f.flight.pending_first_build = true;
        assert_eq!(
            actions(&f, &[]).actions,
            [Action::CancelPending, Action::Delete { workspace_ids: vec![id(2), id(1)] }]
        );
    }

    #[test]
    fn backoff_leads_and_withholds_only_the_create() {
        let owned = rows(3);
        let all: Vec<&RunningPrebuild> = owned.iter().collect();
        let split = fresh_split(&all);
        let mut f = facts(&all, &split, 2);
        f.backoff = in_force();
        assert_eq!(
            actions(&f, &[]).actions,
            [
                Action::Backoff { until: t("2025-06-02T09:05:00Z") },
                Action::Delete { workspace_ids: vec![id(3)] }
            ]
        );
        f.desired = 5;
        let planned = actions(&f, &[]);
        assert_eq!(planned.actions, [Action::Backoff { until: t("2025-06-02T09:05:00Z") }]);
        assert_eq!(
            planned.withheld,
            Some(Withheld { count: 2, reasons: vec![WithheldReason::Backoff] })
        );
    }

    #[test]
    fn hard_limit_withholds_creates_and_sets_the_status_last() {
        let owned = rows(1);
        let all: Vec<&RunningPrebuild> = owned.iter().collect();
        let split = fresh_split(&all);
        let mut f = facts(&all, &split, 3);
        f.hard_limited = true;
        let planned = actions(&f, &[]);
        assert_eq!(planned.actions, [Action::SetStatus { status: PresetStatus::HardLimited }]);
        assert_eq!(planned.withheld.map(|w| w.reasons), Some(vec![WithheldReason::HardLimited]));
        // Lifted: create again and go back to healthy.
        f.hard_limited = false;
        f.status = PresetStatus::HardLimited;
        assert_eq!(
            actions(&f, &[]).actions,
            [Action::Create { count: 2 }, Action::SetStatus { status: PresetStatus::Healthy }]
        );
    }

    #[test]
    fn validation_failed_withholds_creates_and_is_never_overwritten() {
        let owned = rows(3);
        let all: Vec<&RunningPrebuild> = owned.iter().collect();
        let split = fresh_split(&all);
        let mut f = facts(&all, &split, 5);
        f.status = PresetStatus::ValidationFailed;
        f.hard_limited = true;
        let planned = actions(&f, &[]);
        assert_eq!(planned.actions, []);
        assert_eq!(planned.withheld.map(|w| w.count), Some(2));
        f.desired = 1;
        assert_eq!(
            actions(&f, &[]).actions,
            [Action::Delete { workspace_ids: vec![id(3), id(2)] }]
        );
    }

    #[test]
    fn pending_cap_counts_starts_in_flight() {
        let all: Vec<&RunningPrebuild> = Vec::new();
        let split = Split::default();
        let mut f = facts(&all, &split, 10);
        f.max_pending_creates = 3;
        f.flight.starting = 1;
        let planned = actions(&f, &[]);
        assert_eq!(planned.actions, [Action::Create { count: 2 }]);
        assert_eq!(
            planned.withheld,
            Some(Withheld { count: 7, reasons: vec![WithheldReason::PendingCap] })
        );
        f.flight.starting = 4;
        assert_eq!(actions(&f, &[]).actions, [], "max(m − starting, 0) = 0");
    }
}
