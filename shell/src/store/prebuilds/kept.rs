//! The prebuild snapshot's rows kept between cycles, keyed so that what changed can be
//! replaced alone: presets by id, live prebuilds by workspace id (each with every build it
//! has). A snapshot is assembled from them for any set of presets at any `now`; what depends
//! on `now` (the lookback of recent builds, the claims window) is applied at assembly, never
//! at load, so kept rows stay right as time passes.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use poolkeeper_core::prebuilds::{Claim, PrebuildSnapshot, Preset, RecentBuild, ReconcilerConfig};
use smallvec::SmallVec;
use uuid::Uuid;

use super::load::{LoadedPrebuilds, PresetNames};
use super::rows::{finished_start, to_prebuild, to_preset, BuildRow, PresetRow, Row, ScheduleRow};
use poolkeeper_core::prebuilds::PresetSchedule;

/// The kept rows. Filled whole by a full load, then patched by the change feed.
#[derive(Debug, Clone)]
pub struct KeptSnapshot {
    config: ReconcilerConfig,
    presets: HashMap<Uuid, KeptPreset>,
    prebuilds: HashMap<Uuid, KeptPrebuild>,
    /// Each preset named by a kept prebuild's builds, and those prebuilds: such a preset
    /// stays in the snapshot (the core must see it to delete them).
    named_by: HashMap<Uuid, HashSet<Uuid>>,
    /// Claims of autoscaled presets, newest last, from the widest window read.
    claims: HashMap<Uuid, Vec<Claim>>,
}

#[derive(Debug, Clone)]
struct KeptPreset {
    names: PresetNames,
    has_pool: bool,
    autoscale_window_secs: Option<i64>,
    preset: Result<Preset, &'static str>,
}

/// The presets a prebuild's builds name: nearly always one, kept without an allocation.
type Named = SmallVec<[Uuid; 1]>;

#[derive(Debug, Clone)]
struct KeptPrebuild {
    /// Every preset its builds name.
    named: Named,
    /// Its preset (that of its newest build naming one) and what its latest build makes it.
    row: Option<(Uuid, Result<Option<Row>, &'static str>)>,
    /// Its latest finished start build, counted by the backoff of that build's preset.
    recent: Option<RecentBuild>,
}

impl KeptSnapshot {
    pub fn new(config: ReconcilerConfig) -> Self {
        Self {
            config,
            presets: HashMap::new(),
            prebuilds: HashMap::new(),
            named_by: HashMap::new(),
            claims: HashMap::new(),
        }
    }

    pub fn config(&self) -> ReconcilerConfig {
        self.config
    }

    /// Replaces the named presets' rows; `schedules` are all the schedules of `rows`.
    pub(super) fn put_presets(&mut self, rows: Vec<PresetRow>, schedules: Vec<ScheduleRow>) {
        let mut by_preset: HashMap<Uuid, Result<Vec<PresetSchedule>, &'static str>> =
            HashMap::new();
        for row in schedules {
            let entry = by_preset.entry(row.preset_id).or_insert_with(|| Ok(Vec::new()));
            match (u32::try_from(row.instances), entry) {
                (Ok(instances), Ok(list)) => {
                    list.push(PresetSchedule { cron: row.cron, instances })
                }
                (Err(_), entry) => *entry = Err("negative schedule instances"),
                (Ok(_), Err(_)) => {}
            }
        }
        for row in rows {
            let id = row.id;
            let names = PresetNames {
                organization: row.organization_name.clone(),
                template: row.template_name.clone(),
                preset: row.name.clone(),
            };
            let has_pool = row.has_pool;
            let autoscale_window_secs = row.autoscale_window_secs;
            let preset = match by_preset.remove(&id).unwrap_or_else(|| Ok(Vec::new())) {
                Ok(schedules) => to_preset(row, schedules),
                Err(why) => Err(why),
            };
            self.presets.insert(id, KeptPreset { names, has_pool, autoscale_window_secs, preset });
        }
    }

    pub(super) fn forget_preset(&mut self, id: Uuid) {
        self.presets.remove(&id);
        self.claims.remove(&id);
    }

    /// Replaces the named workspaces with `rows` (every build of each, any order): a
    /// workspace that is no longer a live prebuild is dropped. Returns every preset named
    /// before or after, live or not: their plans or claims may have changed.
    pub(super) fn put_workspaces(
        &mut self,
        ids: &[Uuid],
        mut rows: Vec<BuildRow>,
    ) -> HashSet<Uuid> {
        let mut touched = HashSet::new();
        for id in ids {
            if let Some(old) = self.prebuilds.remove(id) {
                for preset in old.named {
                    touched.insert(preset);
                    if let Some(set) = self.named_by.get_mut(&preset) {
                        set.remove(id);
                        if set.is_empty() {
                            self.named_by.remove(&preset);
                        }
                    }
                }
            }
        }
        touched.extend(rows.iter().filter_map(|b| b.preset_id));
        rows.retain(|b| b.live);
        self.put_live(rows);
        touched
    }

    /// Adds live prebuilds from their builds (any order).
    pub(super) fn put_live(&mut self, mut rows: Vec<BuildRow>) {
        // Each prebuild's builds, newest first.
        rows.sort_unstable_by(|a, b| {
            a.workspace_id.cmp(&b.workspace_id).then(b.build_number.cmp(&a.build_number))
        });
        // At most one entry a row: growing the map instead rehashes it again and again.
        self.prebuilds.reserve(rows.len());
        for builds in rows.chunk_by(|a, b| a.workspace_id == b.workspace_id) {
            let workspace_id = builds[0].workspace_id;
            let mut named: Named = builds.iter().filter_map(|b| b.preset_id).collect();
            named.sort_unstable();
            named.dedup();
            // A delete build may carry no preset: the prebuild's is that of its newest
            // build that has one.
            let row = builds
                .iter()
                .find_map(|b| b.preset_id)
                .map(|preset_id| (preset_id, to_prebuild(&builds[0], preset_id)));
            let recent = builds.iter().find_map(finished_start);
            for preset in &named {
                self.named_by.entry(*preset).or_default().insert(workspace_id);
            }
            self.prebuilds.insert(workspace_id, KeptPrebuild { named, row, recent });
        }
    }

    /// Replaces the claims of `presets` with `claims`.
    pub(super) fn put_claims(&mut self, presets: &[Uuid], claims: Vec<Claim>) {
        for id in presets {
            self.claims.remove(id);
        }
        for claim in claims {
            self.claims.entry(claim.preset_id).or_default().push(claim);
        }
    }

    /// Whether the preset belongs in the snapshot: it has a pool, or a live prebuild names it.
    fn in_snapshot(&self, id: &Uuid) -> bool {
        self.presets.get(id).is_some_and(|p| p.has_pool) || self.named_by.contains_key(id)
    }

    /// Presets a live prebuild names whose rows are not kept yet.
    pub(super) fn missing_presets(&self) -> Vec<Uuid> {
        self.named_by.keys().filter(|id| !self.presets.contains_key(id)).copied().collect()
    }

    /// Drops the presets among `touched` that left the snapshot (no pool, no live
    /// prebuild): only a change to a preset can make it leave.
    pub(super) fn drop_unused_presets(&mut self, touched: &HashSet<Uuid>) {
        let unused: Vec<Uuid> = touched
            .iter()
            .filter(|id| self.presets.contains_key(id) && !self.in_snapshot(id))
            .copied()
            .collect();
        for id in unused {
            self.forget_preset(id);
        }
    }

    /// The autoscaled ones among `presets`, and the oldest claim instant any of them reads
    /// at `now`: two windows back (the demand's and the hysteresis behind it).
    pub(super) fn autoscaled(
        &self,
        presets: impl IntoIterator<Item = Uuid>,
        now: DateTime<Utc>,
    ) -> (Vec<Uuid>, DateTime<Utc>) {
        let mut ids = Vec::new();
        let mut widest = 0;
        for id in presets {
            if let Some(window) = self.presets.get(&id).and_then(|p| p.autoscale_window_secs) {
                ids.push(id);
                widest = widest.max(window);
            }
        }
        (ids, claims_since(widest, now))
    }

    /// Every preset in the snapshot.
    pub fn preset_ids(&self) -> HashSet<Uuid> {
        let mut ids: HashSet<Uuid> =
            self.presets.iter().filter(|(_, p)| p.has_pool).map(|(id, _)| *id).collect();
        ids.extend(self.named_by.keys().copied());
        ids
    }

    /// The readable presets in the snapshot and their names, without their rows (what the
    /// metrics label).
    pub fn presets(&self) -> (Vec<Preset>, HashMap<Uuid, PresetNames>) {
        let mut presets = Vec::new();
        let mut names = HashMap::new();
        for (id, kept) in &self.presets {
            if let (true, Ok(preset)) = (self.in_snapshot(id), &kept.preset) {
                presets.push(preset.clone());
                names.insert(*id, kept.names.clone());
            }
        }
        (presets, names)
    }

    /// The snapshot at `now` of the presets in `only` (all when `None`) that belong in it.
    /// A preset with an unreadable row is left out with a warning, with all its rows.
    pub fn assemble(&self, only: Option<&HashSet<Uuid>>, now: DateTime<Utc>) -> LoadedPrebuilds {
        let lookback_start = i64::try_from(self.config.backoff_lookback_secs)
            .ok()
            .and_then(chrono::Duration::try_seconds)
            .and_then(|lookback| now.checked_sub_signed(lookback))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut ids: Vec<Uuid> = match only {
            Some(only) => only.iter().filter(|id| self.in_snapshot(id)).copied().collect(),
            None => self.preset_ids().into_iter().collect(),
        };
        let mut presets = Vec::with_capacity(ids.len());
        let mut names = HashMap::with_capacity(ids.len());
        let mut snapshot = PrebuildSnapshot {
            config: self.config,
            presets: Vec::new(),
            running: Vec::new(),
            in_progress: Vec::new(),
            recent_builds: Vec::new(),
            failed: Vec::new(),
            claims: Vec::new(),
        };
        ids.sort_unstable();
        for id in ids {
            // A preset named by a prebuild but not readable at all (deleted meanwhile) has
            // no row to plan with; the next cycle sees its prebuilds' builds lose it.
            let Some(kept) = self.presets.get(&id) else { continue };
            let preset = match &kept.preset {
                Ok(preset) => preset,
                Err(why) => {
                    unreadable(id, why);
                    continue;
                }
            };
            // The preset's rows go straight into the snapshot, taken back out if one is
            // unreadable: a vector a preset would cost 40,000 allocations at 10,000 presets.
            let before = Lengths::of(&snapshot);
            if let Err(why) = self.collect(id, &mut snapshot) {
                before.truncate(&mut snapshot);
                unreadable(id, why);
                continue;
            }
            keep_recent(
                &mut snapshot.recent_builds,
                before.recent_builds,
                lookback_start,
                self.config.failure_hard_limit,
            );
            if let Some(window) = kept.autoscale_window_secs {
                let since = claims_since(window, now);
                snapshot.claims.extend(
                    self.claims.get(&id).into_iter().flatten().filter(|c| c.at > since).cloned(),
                );
            }
            presets.push((&kept.names, preset));
            names.insert(id, kept.names.clone());
        }
        presets.sort_by(|(a, pa), (b, pb)| {
            (&a.organization, &a.template, &a.preset, pa.id).cmp(&(
                &b.organization,
                &b.template,
                &b.preset,
                pb.id,
            ))
        });
        snapshot.presets = presets.into_iter().map(|(_, p)| p.clone()).collect();
        snapshot.running.sort_unstable_by_key(|r| r.workspace_id);
        snapshot.in_progress.sort_unstable_by_key(|r| r.workspace_id);
        snapshot.failed.sort_unstable_by_key(|r| r.workspace_id);
        snapshot.recent_builds.sort_unstable_by(recent_order);
        snapshot.claims.sort_unstable_by_key(|c| (c.preset_id, c.at, c.workspace_id));
        LoadedPrebuilds { snapshot, names }
    }

    /// Appends the rows of preset `id` to `snapshot`; an unreadable one makes the whole
    /// preset unreadable (the caller takes back what was appended).
    fn collect(&self, id: Uuid, snapshot: &mut PrebuildSnapshot) -> Result<(), &'static str> {
        for workspace_id in self.named_by.get(&id).into_iter().flatten() {
            let Some(prebuild) = self.prebuilds.get(workspace_id) else { continue };
            if let Some((preset_id, row)) = &prebuild.row {
                if *preset_id == id {
                    match row.clone()? {
                        Some(Row::Running(r)) => snapshot.running.push(r),
                        Some(Row::InProgress(r)) => snapshot.in_progress.push(r),
                        Some(Row::Failed(r)) => snapshot.failed.push(r),
                        None => {}
                    }
                }
            }
            if let Some(recent) = prebuild.recent.as_ref().filter(|r| r.preset_id == id) {
                snapshot.recent_builds.push(recent.clone());
            }
        }
        Ok(())
    }
}

/// How many rows of each kind a snapshot held before a preset's were appended.
#[derive(Clone, Copy)]
struct Lengths {
    running: usize,
    in_progress: usize,
    failed: usize,
    recent_builds: usize,
}

impl Lengths {
    fn of(snapshot: &PrebuildSnapshot) -> Self {
        Self {
            running: snapshot.running.len(),
            in_progress: snapshot.in_progress.len(),
            failed: snapshot.failed.len(),
            recent_builds: snapshot.recent_builds.len(),
        }
    }

    /// Takes back every row appended since.
    fn truncate(self, snapshot: &mut PrebuildSnapshot) {
        snapshot.running.truncate(self.running);
        snapshot.in_progress.truncate(self.in_progress);
        snapshot.failed.truncate(self.failed);
        snapshot.recent_builds.truncate(self.recent_builds);
    }
}

/// Two windows back from `now`; `MIN_UTC` for an absurd window.
fn claims_since(window_secs: i64, now: DateTime<Utc>) -> DateTime<Utc> {
    window_secs
        .checked_mul(2)
        .and_then(chrono::Duration::try_seconds)
        .and_then(|back| now.checked_sub_signed(back))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// By preset, newest first.
fn recent_order(a: &RecentBuild, b: &RecentBuild) -> std::cmp::Ordering {
    (a.preset_id, b.created_at, a.workspace_id).cmp(&(b.preset_id, a.created_at, b.workspace_id))
}

/// Keeps one preset's builds, `builds[from..]`, inside the lookback window or among the
/// `hard_limit` newest (the hard limit may look further back). Newest first, those kept are
/// a prefix.
fn keep_recent(
    builds: &mut Vec<RecentBuild>,
    from: usize,
    lookback_start: DateTime<Utc>,
    hard_limit: u32,
) {
    let Some(preset) = builds.get_mut(from..) else { return };
    preset.sort_unstable_by(recent_order);
    let hard_limit = usize::try_from(hard_limit).unwrap_or(usize::MAX);
    let kept = preset
        .iter()
        .enumerate()
        .take_while(|(rank, b)| b.created_at >= lookback_start || *rank < hard_limit)
        .count();
    builds.truncate(from + kept);
}

fn unreadable(preset_id: Uuid, why: &str) {
    tracing::warn!(%preset_id, why, "preset skipped this cycle: unreadable row");
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use poolkeeper_core::build::{JobStatus, Transition};
    use poolkeeper_core::prebuilds::FinishedStatus;

    use super::super::rows::Known;
    use super::*;

    const CONFIG: ReconcilerConfig = ReconcilerConfig {
        backoff_interval_secs: 60,
        backoff_lookback_secs: 3600,
        failure_hard_limit: 2,
        max_pending_creates_per_preset: 0,
        failed_keep: 3,
        failed_grace_secs: 3600,
    };

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).single().expect("a valid instant")
    }

    fn preset(id: Uuid) -> PresetRow {
        PresetRow {
            id,
            name: format!("preset-{id}"),
            template_id: Uuid::from_u128(900),
            template_version_id: Uuid::from_u128(901),
            using_active_version: true,
            template_deleted: false,
            template_deprecated: false,
            desired_instances: 30,
            expiration_ttl_secs: 0,
            scheduling_timezone: String::new(),
            schedule_lead_secs: 0,
            invalidated_at: None,
            prebuild_status: "healthy".to_owned(),
            organization_name: "org".to_owned(),
            template_name: "template".to_owned(),
            autoscale_min: None,
            autoscale_max: None,
            autoscale_window_secs: None,
            autoscale_headroom: None,
            has_pool: true,
        }
    }

    /// Kept rows of `presets` (each with a pool) and of the prebuilds whose builds are `rows`.
    fn kept_of(presets: &[Uuid], rows: Vec<BuildRow>) -> KeptSnapshot {
        let mut kept = KeptSnapshot::new(CONFIG);
        kept.put_presets(presets.iter().map(|id| preset(*id)).collect(), Vec::new());
        kept.put_live(rows);
        kept
    }

    /// The first (only) build of a prebuild of `preset`, its start job in `status`.
    fn start(
        workspace: u128,
        preset: Uuid,
        status: Known<JobStatus>,
        at: DateTime<Utc>,
    ) -> BuildRow {
        BuildRow {
            workspace_id: Uuid::from_u128(workspace),
            workspace_created_at: at,
            build_number: 1,
            template_version_id: Uuid::from_u128(901),
            preset_id: Some(preset),
            transition: Known(Some(Transition::Start)),
            created_at: at,
            job_status: status,
            counts_as_build: true,
            ready: true,
            live: true,
        }
    }

    #[test]
    fn an_unreadable_row_takes_every_row_of_its_preset_out_of_the_snapshot() {
        let (bad, good) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let succeeded = Known(Some(JobStatus::Succeeded));
        // Twenty readable prebuilds beside the unreadable one, collected in the order of a
        // hash set's: those read before it must be taken back. Each snapshot's sets have keys
        // of their own, so over ten of them the unreadable row is not read first in all.
        for _ in 0..10 {
            let mut rows: Vec<BuildRow> =
                (100..120).map(|w| start(w, bad, succeeded, at(0))).collect();
            rows.push(start(200, bad, Known(None), at(0)));
            rows.push(start(300, good, succeeded, at(0)));

            let snapshot = kept_of(&[bad, good], rows).assemble(None, at(60)).snapshot;

            let presets: Vec<Uuid> = snapshot.presets.iter().map(|p| p.id).collect();
            assert_eq!(presets, [good]);
            let running: Vec<Uuid> = snapshot.running.iter().map(|r| r.workspace_id).collect();
            assert_eq!(running, [Uuid::from_u128(300)]);
            assert!(snapshot.recent_builds.iter().all(|b| b.preset_id == good));
        }
    }

    #[test]
    fn recent_builds_are_those_of_the_lookback_or_the_hard_limit_newest() {
        let (first, second) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let failed = Known(Some(JobStatus::Failed));
        let now = at(10_000);
        // `first`: two builds inside the hour and three before it; `second`: four before it.
        let mut rows = vec![
            start(1, first, failed, at(9_000)),
            start(2, first, failed, at(8_000)),
            start(3, first, failed, at(10)),
            start(4, first, failed, at(20)),
            start(5, first, failed, at(30)),
        ];
        rows.extend((6..10).map(|w| start(w, second, failed, at(i64::try_from(w).unwrap_or(0)))));

        let recent = kept_of(&[first, second], rows).assemble(None, now).snapshot.recent_builds;

        let kept_builds: Vec<(Uuid, u128)> =
            recent.iter().map(|b| (b.preset_id, b.workspace_id.as_u128())).collect();
        // Newest first in each preset: all within the hour, else the hard limit's two.
        assert_eq!(kept_builds, [(first, 1), (first, 2), (second, 9), (second, 8)]);
        assert!(recent.iter().all(|b| b.job_status == FinishedStatus::Failed));
    }
}
