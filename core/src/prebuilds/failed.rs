//! Failed prebuilds (rules §4 "Failed prebuilds"): the newest few are kept for inspection,
//! the older ones are deleted once past a grace period and no longer read by the backoff or
//! the hard limit, so that steady failures do not pile up.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::counter;
use super::just_after;
use super::rows::PresetRows;
use super::{FailedPrebuild, ReconcilerConfig};
use crate::instant::plus_secs;

/// Explanation: the preset's failed prebuilds and how many of them this plan deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedCleanup {
    pub count: u32,
    pub deleted: u32,
}

/// What the rule decided for one preset.
#[derive(Debug, Default)]
pub(crate) struct Cleanup<'a> {
    /// Oldest last (newest first, as the rows).
    pub delete: Vec<&'a FailedPrebuild>,
    /// The first future instant at which a kept row becomes deletable without new data.
    pub next_at: Option<DateTime<Utc>>,
    pub explanation: Option<FailedCleanup>,
}

/// rules §4 "Failed prebuilds" for one preset, from its own rows. A failed row that also
/// appears as a running or in-progress row of the preset is not a failed prebuild (a replay
/// file may say both; the live state never does) and is left alone.
pub(crate) fn cleanup<'a>(
    rows: &PresetRows<'a>,
    config: &ReconcilerConfig,
    active: bool,
    now: DateTime<Utc>,
) -> Cleanup<'a> {
    if rows.failed.is_empty() {
        return Cleanup::default();
    }
    let live: HashSet<u128> = rows
        .running
        .iter()
        .map(|r| r.workspace_id.as_u128())
        .chain(rows.in_progress.iter().map(|r| r.workspace_id.as_u128()))
        .collect();
    let failed: Vec<&FailedPrebuild> =
        rows.failed.iter().copied().filter(|r| !live.contains(&r.workspace_id.as_u128())).collect();
    let mut cleanup = Cleanup::default();
    if config.failed_grace_secs > 0 {
        // The hard limit reads the k newest builds of the preset; those stay while it does.
        let k = usize::try_from(config.failure_hard_limit).unwrap_or(usize::MAX);
        let read_by_hard_limit: HashSet<u128> =
            rows.recent.iter().take(k).map(|b| b.workspace_id.as_u128()).collect();
        // The backoff reads the builds inside the lookback window: the failed build itself,
        // and (should a file say otherwise) the workspace's row of `recent_builds`.
        let recent_at: HashMap<u128, DateTime<Utc>> =
            rows.recent.iter().map(|b| (b.workspace_id.as_u128(), b.created_at)).collect();
        let keep = usize::try_from(config.failed_keep).unwrap_or(usize::MAX);
        for row in failed.iter().skip(keep) {
            let id = row.workspace_id.as_u128();
            if active && read_by_hard_limit.contains(&id) {
                continue;
            }
            let recent = if active { recent_at.get(&id).copied() } else { None };
            match deletable_from(row, recent, config, active) {
                Some(at) if now >= at => cleanup.delete.push(row),
                Some(at) => cleanup.next_at = cleanup.next_at.into_iter().chain([at]).min(),
                None => {}
            }
        }
    }
    cleanup.explanation = Some(FailedCleanup {
        count: counter(failed.len()),
        deleted: counter(cleanup.delete.len()),
    });
    cleanup
}

/// The first whole second at which `row` is older than the grace period and, for an active
/// preset, it and its workspace's `recent` build are outside the backoff's lookback window
/// (the comparisons are strict); `None` when that lies past the last representable instant.
fn deletable_from(
    row: &FailedPrebuild,
    recent: Option<DateTime<Utc>>,
    config: &ReconcilerConfig,
    active: bool,
) -> Option<DateTime<Utc>> {
    let graced = plus_secs(row.created_at, config.failed_grace_secs).and_then(just_after)?;
    if !active {
        return Some(graced);
    }
    let newest = recent.map_or(row.created_at, |at| at.max(row.created_at));
    let aged_out = plus_secs(newest, config.backoff_lookback_secs).and_then(just_after)?;
    Some(graced.max(aged_out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prebuilds::rows::group_by_preset;
    use crate::prebuilds::rows::tests::{id, preset, running, snapshot, t};
    use crate::prebuilds::{FinishedStatus, RecentBuild};

    fn failed(ws: u128, created_at: &str) -> FailedPrebuild {
        FailedPrebuild { workspace_id: id(ws), preset_id: id(1), created_at: t(created_at) }
    }

    fn recent(ws: u128, created_at: &str) -> RecentBuild {
        RecentBuild {
            workspace_id: id(ws),
            preset_id: id(1),
            created_at: t(created_at),
            job_status: FinishedStatus::Failed,
        }
    }

    /// Five failures an hour apart, 04:00 (workspace 5) to 08:00 (workspace 1).
    fn five_failures() -> crate::prebuilds::PrebuildSnapshot {
        let mut snap = snapshot(vec![preset(1)], Vec::new());
        snap.config.failed_keep = 2;
        snap.config.failed_grace_secs = 1800;
        snap.config.backoff_lookback_secs = 3600;
        snap.failed =
            (1..=5).map(|i| failed(i, &format!("2025-06-02T0{}:00:00Z", 9 - i))).collect();
        snap
    }

    fn deleted(snap: &crate::prebuilds::PrebuildSnapshot, now: &str, active: bool) -> Vec<u128> {
        let groups = group_by_preset(snap);
        let c = cleanup(&groups[&id(1)], &snap.config, active, t(now));
        c.delete.iter().map(|r| r.workspace_id.as_u128()).collect()
    }

    #[test]
    fn keeps_the_newest_and_deletes_the_older_past_grace_and_lookback() {
        let snap = five_failures();
        // 09:00: rows 3, 4, 5 (06:00, 05:00, 04:00) are past grace and lookback.
        assert_eq!(deleted(&snap, "2025-06-02T09:00:00Z", true), [3, 4, 5]);
        // 07:00:00: row 3 (06:00) is exactly one lookback old: still counted by backoff.
        assert_eq!(deleted(&snap, "2025-06-02T07:00:00Z", true), [4, 5]);
        assert_eq!(deleted(&snap, "2025-06-02T07:00:01Z", true), [3, 4, 5]);
    }

    #[test]
    fn zero_grace_turns_the_cleanup_off() {
        let mut snap = five_failures();
        snap.config.failed_grace_secs = 0;
        assert!(deleted(&snap, "2025-06-02T12:00:00Z", true).is_empty());
    }

    #[test]
    fn rows_read_by_the_hard_limit_stay_while_active() {
        let mut snap = five_failures();
        snap.config.failure_hard_limit = 4;
        snap.recent_builds =
            (1..=5).map(|i| recent(i, &format!("2025-06-02T0{}:00:00Z", 9 - i))).collect();
        assert_eq!(deleted(&snap, "2025-06-02T12:00:00Z", true), [5]);
        // An inactive preset has no hard limit and no backoff: only keep and grace count.
        assert_eq!(deleted(&snap, "2025-06-02T06:30:01Z", false), [3, 4, 5]);
    }

    #[test]
    fn next_at_is_the_first_second_a_kept_row_becomes_deletable() {
        let mut snap = five_failures();
        snap.config.failed_grace_secs = 7200;
        let groups = group_by_preset(&snap);
        let c = cleanup(&groups[&id(1)], &snap.config, true, t("2025-06-02T07:30:00Z"));
        // Rows 4 and 5 (05:00, 04:00) are deletable; row 3 (06:00) after 08:00:00.
        assert_eq!(c.delete.len(), 2);
        assert_eq!(c.next_at, Some(t("2025-06-02T08:00:01Z")));
        assert_eq!(c.explanation, Some(FailedCleanup { count: 5, deleted: 2 }));
    }

    #[test]
    fn a_failed_row_that_is_also_live_is_left_alone() {
        let mut snap = five_failures();
        snap.running = vec![running(5, 1, "2025-06-02T04:00:00Z")];
        assert_eq!(deleted(&snap, "2025-06-02T09:00:00Z", true), [3, 4]);
    }
}
