//! The latest plan of every preset, kept between cycles. Only presets that may plan
//! differently are planned again (rules §8): those whose inputs changed (the change feed
//! says which), those whose `next_check_at` has come (time alone changes their plan), and
//! those whose plan asked for work (a failed apply changes nothing the feed would report).
//! The core plans each preset from its own rows only, so the kept plans of the others are
//! what a full plan would give.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use poolkeeper_core::prebuilds::{plan, Action, PresetPlan};
use uuid::Uuid;

use crate::store::prebuilds::{KeptSnapshot, LoadedPrebuilds, Refreshed};

#[derive(Debug, Default)]
pub struct KeptPlans {
    plans: HashMap<Uuid, PresetPlan>,
}

impl KeptPlans {
    pub fn clear(&mut self) {
        self.plans.clear();
    }

    /// Plans at `now` the presets that need it after `refreshed` and keeps their plans.
    /// Returns the snapshot of those presets and their new plans, in the same order.
    pub fn replan(
        &mut self,
        kept: &KeptSnapshot,
        refreshed: Refreshed,
        now: DateTime<Utc>,
    ) -> (LoadedPrebuilds, Vec<PresetPlan>) {
        let only = match refreshed {
            Refreshed::Full => {
                self.plans.clear();
                None
            }
            Refreshed::Presets(mut changed) => {
                changed.extend(
                    self.plans.values().filter(|p| due(p, now) || has_work(p)).map(|p| p.preset_id),
                );
                Some(changed)
            }
        };
        let loaded = kept.assemble(only.as_ref(), now);
        let plans = plan(now, &loaded.snapshot);
        // A preset planned again but no longer in the snapshot (or unreadable) has no plan.
        for id in only.iter().flat_map(HashSet::iter) {
            self.plans.remove(id);
        }
        self.plans.extend(plans.iter().map(|p| (p.preset_id, p.clone())));
        (loaded, plans)
    }

    pub fn len(&self) -> usize {
        self.plans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.plans.is_empty()
    }

    pub fn get(&self, preset_id: &Uuid) -> Option<&PresetPlan> {
        self.plans.get(preset_id)
    }

    /// Every kept plan, in preset id order.
    pub fn sorted(&self) -> Vec<&PresetPlan> {
        let mut plans: Vec<&PresetPlan> = self.plans.values().collect();
        plans.sort_unstable_by_key(|p| p.preset_id);
        plans
    }

    /// The earliest instant at which time alone may change some plan.
    pub fn next_check_at(&self) -> Option<DateTime<Utc>> {
        self.plans.values().filter_map(|p| p.next_check_at).min()
    }
}

/// Whether time alone may have changed the plan since it was made.
fn due(plan: &PresetPlan, now: DateTime<Utc>) -> bool {
    plan.next_check_at.is_some_and(|at| at <= now)
}

/// Whether the plan asks for work (a backoff is a wait, not work).
pub(super) fn has_work(plan: &PresetPlan) -> bool {
    plan.actions.iter().any(|a| !matches!(a, Action::Backoff { .. }))
}
