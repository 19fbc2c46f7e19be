//! `next_check_at` (rules §4): the earliest future instant at which the plan could change
//! without new data.

use chrono::{DateTime, Utc};

use super::backoff::Backoff;
use super::rows::expires_at;
use super::{Preset, RunningPrebuild};
use crate::schedule::PrebuildWindows;

/// The earliest of: the end of backoff (or a failure ageing out of the lookback, which moves
/// `until`), the next window edge (shifted by the lead time), and the next TTL expiry of a
/// fresh row. Strict boundaries are reported one second after the boundary, the first
/// whole-second instant at which the change is visible.
pub(crate) fn next_check_at(
    preset: &Preset,
    now: DateTime<Utc>,
    backoff: Option<Backoff>,
    windows: Option<&PrebuildWindows>,
    fresh_oldest_first: &[&RunningPrebuild],
) -> Option<DateTime<Utc>> {
    let backoff_change = backoff.and_then(|b| b.changes_at);
    let edge = windows.and_then(|w| w.next_edge_after(now, preset.schedule_lead_secs));
    // The oldest fresh row is the first to reach its TTL.
    let expiry = fresh_oldest_first.first().and_then(|row| expires_at(row, preset));
    [backoff_change, edge, expiry].into_iter().flatten().filter(|at| *at > now).min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prebuilds::rows::tests::{preset, running, t};

    #[test]
    fn nothing_pending_means_null() {
        let p = preset(1);
        let row = running(1, 1, "2025-06-02T08:00:00Z");
        assert_eq!(next_check_at(&p, t("2025-06-02T09:00:00Z"), None, None, &[&row]), None);
    }

    #[test]
    fn the_earliest_candidate_wins() {
        let mut p = preset(1);
        p.expiration_ttl_secs = 7200;
        let row = running(1, 1, "2025-06-02T08:00:00Z");
        let now = t("2025-06-02T09:00:00Z");
        assert_eq!(next_check_at(&p, now, None, None, &[&row]), Some(t("2025-06-02T10:00:01Z")));
        let backoff = Backoff {
            until: t("2025-06-02T09:02:00Z"),
            changes_at: Some(t("2025-06-02T09:02:01Z")),
        };
        assert_eq!(
            next_check_at(&p, now, Some(backoff), None, &[&row]),
            Some(t("2025-06-02T09:02:01Z"))
        );
    }
}
