//! Demand-driven pool size (rules §4 "Autoscale"): the desired count follows the claims of
//! the last window, times a headroom, within [min, max]; it grows at once and shrinks only
//! after the demand stayed lower for a whole window.

use chrono::{DateTime, Utc};

use super::{Autoscale, Claim};
use crate::instant::{duration, plus_secs};

/// What the rule derived for one preset at `now`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scaled {
    /// The count autoscale asks for, in `[min, max]`.
    pub count: u32,
    /// The largest number of claims in one window over the last window (what `count` came
    /// from).
    pub peak: usize,
    /// The first future instant at which `count` may change without new data: a claim
    /// leaving the hysteresis, or a claim of the snapshot dated after `now` becoming demand.
    pub changes_at: Option<DateTime<Utc>>,
}

/// `clamp(ceil(claims × headroom), min, max)`.
pub(crate) fn wanted(autoscale: &Autoscale, claims: usize) -> u32 {
    let scaled = (claims as f64 * autoscale.headroom).ceil();
    // A non-finite or huge product is as much as the pool may hold.
    let scaled = if scaled.is_finite() && scaled < f64::from(u32::MAX) {
        scaled.max(0.0) as u32
    } else {
        u32::MAX
    };
    scaled.clamp(autoscale.min, autoscale.max.max(autoscale.min))
}

/// rules §4 "Autoscale". `claims` are the preset's claims, oldest first, one per workspace. The demand at instant `t` is the number of claims in `(t − w, t]`; the count is
/// the largest [`wanted`] of that demand over `t ∈ [now − w, now]`: a burst raises it at once,
/// and it comes down only once the burst is a whole window behind.
pub(crate) fn scale(autoscale: &Autoscale, claims: &[&Claim], now: DateTime<Utc>) -> Scaled {
    let w = autoscale.window_secs;
    let past: Vec<DateTime<Utc>> = claims.iter().map(|c| c.at).filter(|at| *at <= now).collect();
    let Some(window) = duration(w) else {
        // A window longer than time itself: every past claim is in it, for ever.
        let changes_at = claims.iter().map(|c| c.at).filter(|at| *at > now).min();
        return Scaled { count: wanted(autoscale, past.len()), peak: past.len(), changes_at };
    };
    // `past` is oldest first: a window's claims are counted by two binary searches.
    let in_window = |t: DateTime<Utc>| {
        let upto = past.partition_point(|at| *at <= t);
        let before =
            t.checked_sub_signed(window).map_or(0, |start| past.partition_point(|at| *at <= start));
        upto.saturating_sub(before)
    };
    // The demand only rises at a claim, so its largest value over [now − w, now] is taken at
    // the window's start or at a claim inside it.
    let start = now.checked_sub_signed(window);
    let peak = start
        .into_iter()
        .chain(past.iter().copied().filter(|at| start.is_none_or(|start| *at > start)))
        .map(in_window)
        .max()
        .unwrap_or(0);
    // A claim at `c` counts in the demand until `c + w` and in the hysteresis until `c + 2w`.
    let changes_at = claims
        .iter()
        .filter_map(|c| {
            if c.at > now {
                Some(c.at)
            } else {
                plus_secs(c.at, w).and_then(|end| plus_secs(end, w))
            }
        })
        .filter(|at| *at > now)
        .min();
    Scaled { count: wanted(autoscale, peak), peak, changes_at }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prebuilds::rows::tests::{id, t};

    fn autoscale(min: u32, max: u32, window_secs: u64, headroom: f64) -> Autoscale {
        Autoscale { min, max, window_secs, headroom }
    }

    fn claims(times: &[&str]) -> Vec<Claim> {
        times
            .iter()
            .enumerate()
            .map(|(i, at)| Claim { workspace_id: id(100 + i as u128), preset_id: id(1), at: t(at) })
            .collect()
    }

    fn run(a: &Autoscale, times: &[&str], now: &str) -> Scaled {
        let owned = claims(times);
        let refs: Vec<&Claim> = owned.iter().collect();
        scale(a, &refs, t(now))
    }

    #[test]
    fn no_claims_wants_the_minimum() {
        let a = autoscale(2, 10, 600, 1.5);
        assert_eq!(
            run(&a, &[], "2025-06-02T09:00:00Z"),
            Scaled { count: 2, peak: 0, changes_at: None }
        );
    }

    #[test]
    fn a_burst_grows_at_once_rounded_up_and_capped() {
        let a = autoscale(1, 5, 600, 1.5);
        let burst = ["2025-06-02T08:58:00Z", "2025-06-02T08:59:00Z", "2025-06-02T09:00:00Z"];
        let s = run(&a, &burst, "2025-06-02T09:00:00Z");
        assert_eq!((s.count, s.peak), (5, 3), "ceil(3 × 1.5) = 5");
        assert_eq!(run(&a, &burst[..1], "2025-06-02T09:00:00Z").count, 2, "ceil(1.5) = 2");
        let a = autoscale(1, 4, 600, 1.5);
        assert_eq!(run(&a, &burst, "2025-06-02T09:00:00Z").count, 4, "max caps it");
    }

    #[test]
    fn shrinks_only_a_whole_window_after_the_burst() {
        let a = autoscale(0, 10, 600, 1.0);
        let burst = ["2025-06-02T09:00:00Z", "2025-06-02T09:00:00Z"];
        // The burst leaves the demand at 09:10 and the hysteresis at 09:20.
        assert_eq!(run(&a, &burst, "2025-06-02T09:10:00Z").count, 2);
        let s = run(&a, &burst, "2025-06-02T09:19:59Z");
        assert_eq!((s.count, s.changes_at), (2, Some(t("2025-06-02T09:20:00Z"))));
        assert_eq!(run(&a, &burst, "2025-06-02T09:20:00Z").count, 0);
    }

    #[test]
    fn future_claims_are_not_demand_yet() {
        let a = autoscale(0, 10, 600, 1.0);
        assert_eq!(run(&a, &["2025-06-02T09:00:01Z"], "2025-06-02T09:00:00Z").count, 0);
    }
}
