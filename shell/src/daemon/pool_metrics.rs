//! Builds the pool-wide metrics state from one prebuild cycle's snapshot and plans.
//!
//! Only presets of a template's active version (template not deleted) get series, as Coder
//! does: a superseded version's or a deleted template's presets vanish at the next cycle,
//! and two versions' presets of the same name never produce duplicate label sets.

use std::collections::{HashMap, HashSet};

use poolkeeper_core::prebuilds::{Preset, PresetPlan, PresetStatus};
use uuid::Uuid;

use crate::store::metrics::MetricsFigures;
use crate::store::prebuilds::PresetNames;
use crate::telemetry::metrics::PresetLabels;
use crate::telemetry::pool_state::label_value;
use crate::telemetry::{PoolState, PrebuildTotals, PresetSeries};

/// The series of this cycle's exported presets, keyed by preset id; totals are filled in
/// by [`pool_state`] once read.
pub(super) fn preset_series(
    presets: &[Preset],
    plans: &[PresetPlan],
    names: &HashMap<Uuid, PresetNames>,
) -> Vec<(Uuid, PresetSeries)> {
    let plans: HashMap<Uuid, &PresetPlan> = plans.iter().map(|p| (p.preset_id, p)).collect();
    let mut seen = HashSet::new();
    let mut series = Vec::new();
    for preset in presets.iter().filter(|p| p.using_active_version && !p.template_deleted) {
        let (Some(plan), Some(names)) = (plans.get(&preset.id), names.get(&preset.id)) else {
            continue;
        };
        let labels = PresetLabels {
            organization: label_value(&names.organization),
            template: label_value(&names.template),
            preset: label_value(&names.preset),
        };
        if !seen.insert(labels.clone()) {
            tracing::debug!(preset_id = %preset.id, "preset names repeat; exported once");
            continue;
        }
        let one = PresetSeries {
            labels,
            desired: i64::from(plan.state.desired),
            running: i64::from(plan.state.actual),
            eligible: i64::from(plan.state.eligible),
            hard_limited: plan.hard_limited,
            validation_failed: preset.status == PresetStatus::ValidationFailed,
            totals: None,
        };
        series.push((preset.id, one));
    }
    series
}

/// The state to export. `figures` are the latest readable totals (`None` if never read).
pub(super) fn pool_state(
    paused: bool,
    series: Vec<(Uuid, PresetSeries)>,
    figures: Option<&MetricsFigures>,
) -> PoolState {
    let presets = series
        .into_iter()
        .map(|(id, mut one)| {
            one.totals = figures.map(|f| {
                let t = f.totals.get(&id).copied().unwrap_or_default();
                PrebuildTotals {
                    created: t.created,
                    failed: t.failed,
                    claimed: t.claimed,
                    resource_replacements: t.resource_replacements,
                }
            });
            one
        })
        .collect();
    PoolState { paused, presets, jobs_by_status: figures.map(|f| f.jobs_by_status.clone()) }
}
