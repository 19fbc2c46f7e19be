//! A preset's rows (rules §4 "Rows of P"): the snapshot grouped by preset once, in a total
//! order, and the split of running rows into fresh (`R`) and expired (`E`).

use std::cmp::Reverse;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// FxHash: SipHash over every row's preset id was a quarter of a plan's time. Not keyed,
/// which is fine here: preset ids are made by the server (random v4), never chosen by users.
type IdHashState = rustc_hash::FxBuildHasher;

use super::just_after;
use super::{
    Claim, FailedPrebuild, InFlightStatus, InProgressPrebuild, PrebuildSnapshot, Preset,
    RecentBuild, RunningPrebuild,
};
use crate::build::Transition;
use crate::instant::plus_secs;

/// The rows of one preset. Every list holds distinct workspace ids, in a total order that
/// does not depend on the snapshot's row order (so equal snapshots give byte-equal plans).
#[derive(Debug, Default)]
pub(crate) struct PresetRows<'a> {
    /// Oldest first: `created_at`, ties by workspace id.
    pub running: Vec<&'a RunningPrebuild>,
    /// By workspace id.
    pub in_progress: Vec<&'a InProgressPrebuild>,
    /// Newest first: `created_at` descending, ties by workspace id ascending.
    pub recent: Vec<&'a RecentBuild>,
    /// Newest first: `created_at` descending, ties by workspace id ascending.
    pub failed: Vec<&'a FailedPrebuild>,
    /// Oldest first, ties by workspace id; one claim per workspace.
    pub claims: Vec<&'a Claim>,
}

/// Every preset's rows, found by preset id.
#[derive(Debug)]
pub(crate) struct Groups<'a> {
    /// Preset id (as a number: one write into the hasher, not seventeen) → index in `rows`.
    index: HashMap<u128, usize, IdHashState>,
    rows: Vec<PresetRows<'a>>,
}

impl<'a> Groups<'a> {
    /// The rows of preset `id`; `None` when the snapshot has no such preset.
    pub fn get(&self, id: &Uuid) -> Option<&PresetRows<'a>> {
        self.index.get(&id.as_u128()).and_then(|&at| self.rows.get(at))
    }
}

#[cfg(test)]
impl<'a> std::ops::Index<&Uuid> for Groups<'a> {
    type Output = PresetRows<'a>;

    fn index(&self, id: &Uuid) -> &PresetRows<'a> {
        self.get(id).expect("a preset of the snapshot")
    }
}

/// Groups the rows of the snapshot's presets by preset (rows of other presets are never
/// planned): one hash per row, lists allocated at their final size, one sort per list, never
/// presets × rows.
pub(crate) fn group_by_preset(snapshot: &PrebuildSnapshot) -> Groups<'_> {
    let mut index =
        HashMap::with_capacity_and_hasher(snapshot.presets.len(), IdHashState::default());
    for preset in &snapshot.presets {
        let next = index.len();
        index.entry(preset.id.as_u128()).or_insert(next);
    }
    let group_of = |preset_id: Uuid| index.get(&preset_id.as_u128()).copied();
    let running = by_group(&snapshot.running, index.len(), |row| group_of(row.preset_id));
    let in_progress = by_group(&snapshot.in_progress, index.len(), |row| group_of(row.preset_id));
    let recent = by_group(&snapshot.recent_builds, index.len(), |row| group_of(row.preset_id));
    let failed = by_group(&snapshot.failed, index.len(), |row| group_of(row.preset_id));
    let claims = by_group(&snapshot.claims, index.len(), |row| group_of(row.preset_id));
    let rows = running
        .into_iter()
        .zip(in_progress)
        .zip(recent)
        .zip(failed)
        .zip(claims)
        .map(|((((mut running, mut in_progress), mut recent), mut failed), mut claims)| {
            order_running(&mut running);
            order_in_progress(&mut in_progress);
            order_recent(&mut recent);
            order_failed(&mut failed);
            order_claims(&mut claims);
            PresetRows { running, in_progress, recent, failed, claims }
        })
        .collect();
    Groups { index, rows }
}

/// `rows` split into `groups` lists by `group_of` (rows it maps to `None` are dropped), each
/// list allocated once at its final size.
fn by_group<'a, T>(
    rows: &'a [T],
    groups: usize,
    group_of: impl Fn(&T) -> Option<usize>,
) -> Vec<Vec<&'a T>> {
    let placed: Vec<Option<usize>> = rows.iter().map(group_of).collect();
    let mut sizes = vec![0usize; groups];
    for &group in placed.iter().flatten() {
        sizes[group] += 1;
    }
    let mut lists: Vec<Vec<&'a T>> = sizes.into_iter().map(Vec::with_capacity).collect();
    for (row, group) in rows.iter().zip(placed) {
        if let Some(group) = group {
            lists[group].push(row);
        }
    }
    lists
}

// The sort keys compare ids as `u128` (`Uuid::as_u128` is big-endian, so the order is the
// ids' byte order) rather than as byte arrays.

/// Oldest first, one row per workspace (a duplicated id keeps its oldest copy).
pub(crate) fn order_running(rows: &mut Vec<&RunningPrebuild>) {
    rows.sort_unstable_by_key(|r| {
        (r.workspace_id.as_u128(), r.created_at, r.template_version_id.as_u128(), r.ready)
    });
    rows.dedup_by_key(|r| r.workspace_id);
    rows.sort_unstable_by_key(|r| (r.created_at, r.workspace_id.as_u128()));
}

/// By workspace id, one row per workspace.
fn order_in_progress(rows: &mut Vec<&InProgressPrebuild>) {
    rows.sort_unstable_by_key(|r| {
        (
            r.workspace_id.as_u128(),
            r.transition,
            r.job_status,
            r.build_number,
            r.template_version_id.as_u128(),
        )
    });
    rows.dedup_by_key(|r| r.workspace_id);
}

/// Newest first, ties by workspace id; one build per workspace (its latest, as docs/replay-format.md
/// defines `recent_builds`).
fn order_recent(rows: &mut Vec<&RecentBuild>) {
    rows.sort_unstable_by_key(|r| (r.workspace_id.as_u128(), Reverse(r.created_at), r.job_status));
    rows.dedup_by_key(|r| r.workspace_id);
    rows.sort_unstable_by_key(|r| (Reverse(r.created_at), r.workspace_id.as_u128()));
}

/// Newest first, ties by workspace id; one row per workspace (its newest copy).
fn order_failed(rows: &mut Vec<&FailedPrebuild>) {
    rows.sort_unstable_by_key(|r| (r.workspace_id.as_u128(), Reverse(r.created_at)));
    rows.dedup_by_key(|r| r.workspace_id);
    rows.sort_unstable_by_key(|r| (Reverse(r.created_at), r.workspace_id.as_u128()));
}

/// Oldest first, ties by workspace id; one claim per workspace (its oldest copy).
fn order_claims(rows: &mut Vec<&Claim>) {
    rows.sort_unstable_by_key(|r| (r.workspace_id.as_u128(), r.at));
    rows.dedup_by_key(|r| r.workspace_id);
    rows.sort_unstable_by_key(|r| (r.at, r.workspace_id.as_u128()));
}

/// rules §4: expired iff `now − created_at > expiration_ttl` (ttl > 0), or the preset was
/// invalidated after the row was created.
pub(crate) fn is_expired(row: &RunningPrebuild, preset: &Preset, now: DateTime<Utc>) -> bool {
    // A TTL reaching past the last representable instant never expires the row.
    let by_ttl = preset.expiration_ttl_secs > 0
        && plus_secs(row.created_at, preset.expiration_ttl_secs).is_some_and(|end| now > end);
    let by_invalidation = preset.invalidated_at.is_some_and(|at| row.created_at < at);
    by_ttl || by_invalidation
}

/// The first whole-second instant at which a row that is fresh now is seen expired by its
/// TTL (the comparison is strict), or `None` when it never expires by age.
pub(crate) fn expires_at(row: &RunningPrebuild, preset: &Preset) -> Option<DateTime<Utc>> {
    if preset.expiration_ttl_secs == 0 {
        return None;
    }
    plus_secs(row.created_at, preset.expiration_ttl_secs).and_then(just_after)
}

/// `R` and `E`, both oldest first.
#[derive(Debug, Default)]
pub(crate) struct Split<'a> {
    pub fresh: Vec<&'a RunningPrebuild>,
    pub expired: Vec<&'a RunningPrebuild>,
}

pub(crate) fn split<'a>(
    running: &[&'a RunningPrebuild],
    preset: &Preset,
    now: DateTime<Utc>,
) -> Split<'a> {
    let (expired, fresh) = running.iter().partition(|row| is_expired(row, preset, now));
    Split { fresh, expired }
}

/// The preset's builds in flight, by transition (rules §4 `starting`/`stopping`/`deleting`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InFlight {
    pub starting: usize,
    pub stopping: usize,
    pub deleting: usize,
    /// Some row is a pending first build (build 1, start, job pending): `cancel_pending`.
    pub pending_first_build: bool,
}

impl InFlight {
    pub(crate) fn count(rows: &[&InProgressPrebuild]) -> InFlight {
        let mut flight = InFlight::default();
        for row in rows {
            match row.transition {
                Transition::Start => flight.starting += 1,
                Transition::Stop => flight.stopping += 1,
                Transition::Delete => flight.deleting += 1,
            }
            flight.pending_first_build |= row.build_number == 1
                && row.transition == Transition::Start
                && row.job_status == InFlightStatus::Pending;
        }
        flight
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::prebuilds::{PresetStatus, ReconcilerConfig};

    pub(crate) use crate::t;

    pub fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    pub fn preset(n: u128) -> Preset {
        Preset {
            id: id(n),
            name: format!("preset-{n}"),
            template_id: id(1000),
            template_version_id: id(2000),
            using_active_version: true,
            template_deleted: false,
            template_deprecated: false,
            desired_instances: 0,
            expiration_ttl_secs: 0,
            scheduling_timezone: String::new(),
            schedules: Vec::new(),
            schedule_lead_secs: 0,
            invalidated_at: None,
            status: PresetStatus::Healthy,
            autoscale: None,
        }
    }

    pub fn running(ws: u128, preset: u128, created_at: &str) -> RunningPrebuild {
        RunningPrebuild {
            workspace_id: id(ws),
            preset_id: id(preset),
            template_version_id: id(2000),
            created_at: t(created_at),
            ready: true,
        }
    }

    pub fn snapshot(presets: Vec<Preset>, running: Vec<RunningPrebuild>) -> PrebuildSnapshot {
        PrebuildSnapshot {
            config: ReconcilerConfig {
                backoff_interval_secs: 60,
                backoff_lookback_secs: 3600,
                failure_hard_limit: 0,
                max_pending_creates_per_preset: 0,
                failed_keep: 3,
                failed_grace_secs: 0,
            },
            presets,
            running,
            in_progress: Vec::new(),
            recent_builds: Vec::new(),
            failed: Vec::new(),
            claims: Vec::new(),
        }
    }

    #[test]
    fn ttl_expiry_is_strict() {
        let mut p = preset(1);
        p.expiration_ttl_secs = 3600;
        let row = running(10, 1, "2025-06-02T08:00:00Z");
        assert!(!is_expired(&row, &p, t("2025-06-02T09:00:00Z")), "exactly ttl old is fresh");
        assert!(is_expired(&row, &p, t("2025-06-02T09:00:01Z")));
        assert_eq!(expires_at(&row, &p), Some(t("2025-06-02T09:00:01Z")));
    }

    #[test]
    fn zero_ttl_never_expires() {
        let p = preset(1);
        let row = running(10, 1, "2000-01-01T00:00:00Z");
        assert!(!is_expired(&row, &p, t("2025-06-02T09:00:00Z")));
        assert_eq!(expires_at(&row, &p), None);
    }

    #[test]
    fn invalidation_expires_strictly_older_rows() {
        let mut p = preset(1);
        p.invalidated_at = Some(t("2025-06-02T08:00:00Z"));
        let now = t("2025-06-02T09:00:00Z");
        assert!(is_expired(&running(10, 1, "2025-06-02T07:59:59Z"), &p, now));
        assert!(!is_expired(&running(11, 1, "2025-06-02T08:00:00Z"), &p, now));
    }

    #[test]
    fn grouping_orders_and_dedupes_whatever_the_input_order() {
        let rows = vec![
            running(3, 1, "2025-06-02T08:00:00Z"),
            running(2, 1, "2025-06-02T08:00:00Z"),
            running(1, 1, "2025-06-02T09:00:00Z"),
            running(2, 1, "2025-06-02T07:00:00Z"),
            running(9, 2, "2025-06-02T07:00:00Z"),
        ];
        let mut reversed = rows.clone();
        reversed.reverse();
        for order in [rows, reversed] {
            let snap = snapshot(vec![preset(1), preset(2)], order);
            let groups = group_by_preset(&snap);
            let ids: Vec<Uuid> = groups[&id(1)].running.iter().map(|r| r.workspace_id).collect();
            assert_eq!(ids, vec![id(2), id(3), id(1)]);
            assert_eq!(groups[&id(1)].running[0].created_at, t("2025-06-02T07:00:00Z"));
            assert_eq!(groups[&id(2)].running.len(), 1);
        }
    }

    fn in_progress(
        ws: u128,
        transition: Transition,
        status: InFlightStatus,
        n: u32,
    ) -> InProgressPrebuild {
        InProgressPrebuild {
            workspace_id: id(ws),
            preset_id: id(1),
            template_version_id: id(2000),
            transition,
            job_status: status,
            build_number: n,
        }
    }

    #[test]
    fn in_flight_counts_by_transition_and_spots_pending_first_builds() {
        use InFlightStatus::{Pending, Running};
        let rows = [
            in_progress(1, Transition::Start, Running, 1),
            in_progress(2, Transition::Start, Pending, 2),
            in_progress(3, Transition::Stop, Pending, 1),
            in_progress(4, Transition::Delete, Pending, 3),
        ];
        let refs: Vec<&InProgressPrebuild> = rows.iter().collect();
        let flight = InFlight::count(&refs);
        assert_eq!((flight.starting, flight.stopping, flight.deleting), (2, 1, 1));
        assert!(!flight.pending_first_build, "no row is build 1 + start + pending");
        let first = in_progress(5, Transition::Start, Pending, 1);
        assert!(InFlight::count(&[&first]).pending_first_build);
    }

    #[test]
    fn split_keeps_oldest_first() {
        let mut p = preset(1);
        p.expiration_ttl_secs = 3600;
        let a = running(1, 1, "2025-06-02T07:00:00Z");
        let b = running(2, 1, "2025-06-02T08:30:00Z");
        let c = running(3, 1, "2025-06-02T08:45:00Z");
        let split = split(&[&a, &b, &c], &p, t("2025-06-02T09:00:00Z"));
        assert_eq!(split.expired.len(), 1);
        assert_eq!(split.fresh.iter().map(|r| r.workspace_id).collect::<Vec<_>>(), [id(2), id(3)]);
    }
}
