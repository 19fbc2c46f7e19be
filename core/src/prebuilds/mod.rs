//! Prebuild plans and the claim choice (rules §4).
//!
//! `plan` groups the snapshot's rows by preset once (one sort per preset, never
//! presets × rows) and derives each preset's plan from its own rows only, in a total order:
//! the same snapshot gives the same bytes whatever the order of its rows.

mod actions;
mod autoscale;
mod backoff;
mod claim;
mod desired;
mod failed;
mod next_check;
mod plan;
mod rows;
mod snapshot;

pub use claim::{choose_claim, ClaimChoice};
pub use failed::FailedCleanup;
pub use plan::{Action, PresetState, Withheld, WithheldReason};
pub use snapshot::{
    Autoscale, Claim, FailedPrebuild, FinishedStatus, InFlightStatus, InProgressPrebuild,
    PrebuildSnapshot, Preset, PresetSchedule, PresetStatus, RecentBuild, ReconcilerConfig,
    RunningPrebuild, DEFAULT_FAILED_KEEP,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use actions::Facts;
use rows::{InFlight, PresetRows};

/// A preset's plan for one cycle, with its explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresetPlan {
    pub preset_id: Uuid,
    pub state: PresetState,
    pub hard_limited: bool,
    pub next_check_at: Option<DateTime<Utc>>,
    pub actions: Vec<Action>,
    /// Explanation: where `state.desired` came from (`default`, `schedule[i]`,
    /// `default (invalid schedules: ...)` or `inactive (...)`).
    #[serde(default)]
    pub target: String,
    /// Explanation: creates needed but withheld this cycle, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withheld: Option<Withheld>,
    /// Explanation: the preset's failed prebuilds and how many this plan deletes; left out
    /// when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<FailedCleanup>,
}

/// A row count as a state counter.
fn counter(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The first whole second after a strict boundary `t`: a rule that needs `now > t` (or stays
/// in force while `now ≤ t`) is first seen changed here; `None` past the last instant.
fn just_after(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    crate::instant::plus_secs(t, 1)
}

/// Plans every preset of the snapshot, in input order.
pub fn plan(now: DateTime<Utc>, snapshot: &PrebuildSnapshot) -> Vec<PresetPlan> {
    let groups = rows::group_by_preset(snapshot);
    let no_rows = PresetRows::default();
    snapshot
        .presets
        .iter()
        .map(|preset| {
            let rows = groups.get(&preset.id).unwrap_or(&no_rows);
            plan_preset(now, &snapshot.config, preset, rows)
        })
        .collect()
}

/// rules §4 for one preset, from its own rows.
fn plan_preset(
    now: DateTime<Utc>,
    config: &ReconcilerConfig,
    preset: &Preset,
    rows: &PresetRows<'_>,
) -> PresetPlan {
    let inactive = desired::inactive_reasons(preset);
    let active = inactive.is_empty();
    let split = rows::split(&rows.running, preset, now);
    let flight = InFlight::count(&rows.in_progress);
    let desired = desired::desired(preset, &inactive, &rows.claims, now);
    // Backoff and the hard limit apply to active presets only.
    let (backoff, hard_limited) = if active {
        (
            backoff::backoff(preset, &rows.recent, config, now),
            backoff::hard_limited(&rows.recent, config.failure_hard_limit),
        )
    } else {
        (None, false)
    };
    let facts = Facts {
        active,
        status: preset.status,
        rows: &rows.running,
        split: &split,
        flight,
        desired: desired.count,
        backoff,
        hard_limited,
        max_pending_creates: config.max_pending_creates_per_preset,
    };
    let eligible = if active { split.fresh.iter().filter(|row| row.ready).count() } else { 0 };
    let state = PresetState {
        desired: desired.count,
        actual: counter(rows.running.len()),
        eligible: counter(eligible),
        extraneous: counter(actions::extraneous(&facts)),
        expired: counter(split.expired.len()),
        starting: counter(flight.starting),
        stopping: counter(flight.stopping),
        deleting: counter(flight.deleting),
    };
    let cleanup = failed::cleanup(rows, config, active, now);
    let planned = actions::actions(&facts, &cleanup.delete);
    let next_check_at =
        next_check::next_check_at(preset, now, backoff, desired.windows.as_ref(), &split.fresh)
            .into_iter()
            .chain(cleanup.next_at)
            .chain(desired.autoscale_changes_at)
            .min();
    PresetPlan {
        preset_id: preset.id,
        state,
        hard_limited,
        next_check_at,
        actions: planned.actions,
        target: desired.target,
        withheld: planned.withheld,
        failed: cleanup.explanation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prebuilds::rows::tests::{id, preset, running, snapshot, t};

    #[test]
    fn presets_are_planned_in_input_order_from_their_own_rows() {
        let mut a = preset(1);
        a.desired_instances = 1;
        let mut b = preset(2);
        b.desired_instances = 3;
        let snap = snapshot(
            vec![b, a],
            vec![running(10, 1, "2025-06-02T08:00:00Z"), running(11, 1, "2025-06-02T08:01:00Z")],
        );
        let plans = plan(t("2025-06-02T09:00:00Z"), &snap);
        assert_eq!(plans.iter().map(|p| p.preset_id).collect::<Vec<_>>(), [id(2), id(1)]);
        assert_eq!(plans[0].actions, [Action::Create { count: 3 }]);
        assert_eq!(plans[1].actions, [Action::Delete { workspace_ids: vec![id(10)] }]);
        assert_eq!(plans[1].state.extraneous, 1);
        assert_eq!(plans[1].state.eligible, 2);
        assert_eq!(plans[1].target, "default");
    }

    #[test]
    fn inactive_preset_reports_no_hard_limit_and_zero_counters() {
        let mut p = preset(1);
        p.desired_instances = 2;
        p.using_active_version = false;
        p.status = PresetStatus::HardLimited;
        let mut snap = snapshot(vec![p], vec![running(10, 1, "2025-06-02T08:00:00Z")]);
        snap.config.failure_hard_limit = 1;
        snap.recent_builds = vec![RecentBuild {
            workspace_id: id(11),
            preset_id: id(1),
            created_at: t("2025-06-02T08:59:00Z"),
            job_status: FinishedStatus::Failed,
        }];
        let plans = plan(t("2025-06-02T09:00:00Z"), &snap);
        assert!(!plans[0].hard_limited);
        assert_eq!(plans[0].state.desired, 0);
        assert_eq!(plans[0].state.eligible, 0);
        assert_eq!(plans[0].state.extraneous, 0);
        assert_eq!(plans[0].state.actual, 1);
        assert_eq!(plans[0].actions, [Action::Delete { workspace_ids: vec![id(10)] }]);
        assert_eq!(plans[0].target, "inactive (not the active version)");
    }
}
