//! What the demo shows: each preset's pool as the reconciler sees it (its counters come
//! from the core's plan over a fresh snapshot, so they match what the reconciler acts on),
//! plus the job queue and the claims so far. Read-only.

use std::collections::HashMap;
use std::fmt;

use chrono::Utc;
use poolkeeper_core::prebuilds::{PresetState, ReconcilerConfig};
use uuid::Uuid;

use crate::db::DbPool;
use crate::store::metrics::{activity_counts, version_names};
use crate::store::prebuilds::load_prebuild_snapshot;
use crate::store::StoreError;

/// One preset's pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub preset_id: Uuid,
    pub template_id: Uuid,
    pub template: String,
    pub preset: String,
    pub version: String,
    /// The preset belongs to its template's active version (and the template is live).
    pub active: bool,
    pub state: PresetState,
}

impl Pool {
    /// An active pool holding as many ready, claimable prebuilds as it wants.
    pub fn is_full(&self) -> bool {
        self.active && self.state.eligible >= self.state.desired
    }

    /// Nothing of the pool is left: no prebuild running nor in flight.
    pub fn is_empty(&self) -> bool {
        let s = &self.state;
        s.actual == 0 && s.starting == 0 && s.stopping == 0 && s.deleting == 0
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.state;
        write!(
            f,
            "pool {}/{} [{} {}]: desired {} starting {} running {} eligible {} deleting {}",
            self.template,
            self.preset,
            self.version,
            if self.active { "active" } else { "old" },
            s.desired,
            s.starting,
            s.actual,
            s.eligible,
            s.deleting + s.stopping,
        )
    }
}

/// Everything one progress report shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub pools: Vec<Pool>,
    pub jobs_queued: i64,
    pub jobs_running: i64,
    pub claims: i64,
}

impl Progress {
    /// Reads the pools, the job queue and the claims from the database now.
    pub async fn load(pool: &DbPool, config: ReconcilerConfig) -> Result<Self, StoreError> {
        let now = Utc::now();
        let mut conn = pool.get().await?;
        let loaded = load_prebuild_snapshot(&mut conn, now, config).await?;
        let plans = poolkeeper_core::prebuilds::plan(now, &loaded.snapshot);
        let version_ids: Vec<Uuid> =
            loaded.snapshot.presets.iter().map(|p| p.template_version_id).collect();
        let versions: HashMap<Uuid, String> = version_names(&mut conn, &version_ids).await?;
        let pools = loaded
            .snapshot
            .presets
            .iter()
            .zip(&plans)
            .map(|(preset, plan)| {
                let names = loaded.names.get(&preset.id);
                Pool {
                    preset_id: preset.id,
                    template_id: preset.template_id,
                    template: names
                        .map_or_else(|| preset.template_id.to_string(), |n| n.template.clone()),
                    preset: preset.name.clone(),
                    version: versions
                        .get(&preset.template_version_id)
                        .cloned()
                        .unwrap_or_else(|| preset.template_version_id.to_string()),
                    active: preset.using_active_version && !preset.template_deleted,
                    state: plan.state,
                }
            })
            .collect();
        let (jobs_queued, jobs_running, claims) = activity_counts(&mut conn).await?;
        Ok(Self { pools, jobs_queued, jobs_running, claims })
    }

    /// The pools of `template_id` (every template when `None`).
    pub fn pools_of(&self, template_id: Option<Uuid>) -> impl Iterator<Item = &Pool> {
        self.pools.iter().filter(move |p| template_id.is_none_or(|id| p.template_id == id))
    }

    /// Every active pool of the template wants something and has it, and no old pool of the
    /// template has anything left.
    pub fn settled(&self, template_id: Uuid) -> bool {
        let mut active = 0;
        for pool in self.pools_of(Some(template_id)) {
            if pool.active {
                active += 1;
                if !pool.is_full() {
                    return false;
                }
            } else if !pool.is_empty() {
                return false;
            }
        }
        active > 0
    }

    /// The lines to print: one per pool, each with the queue and claim counts.
    pub fn lines(&self) -> Vec<String> {
        self.pools
            .iter()
            .map(|pool| {
                format!(
                    "{pool} | jobs queued {} running {} | claims {}",
                    self.jobs_queued, self.jobs_running, self.claims
                )
            })
            .collect()
    }
}
