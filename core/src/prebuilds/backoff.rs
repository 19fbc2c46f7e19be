//! Backoff and the hard limit (rules §4), derived afresh every cycle from `recent_builds`.

use chrono::{DateTime, Utc};

use super::just_after;
use super::{FinishedStatus, Preset, RecentBuild, ReconcilerConfig};
use crate::instant::{minus_secs, plus_secs, times_secs};

/// Backoff in force at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// In force while `now ≤ until`.
    pub until: DateTime<Utc>,
    /// The first instant at which `until` changes or backoff ends without new data: a failed
    /// build leaving the lookback window (fewer failures, an earlier `until`), or `until`
    /// passing; `None` when neither happens before the end of time.
    pub changes_at: Option<DateTime<Utc>>,
}

/// rules §4 "Backoff". `recent` is the preset's builds, newest first (ties by workspace id).
/// `None` when backoff is not in force at `now`.
pub(crate) fn backoff(
    preset: &Preset,
    recent: &[&RecentBuild],
    config: &ReconcilerConfig,
    now: DateTime<Utc>,
) -> Option<Backoff> {
    // N covers the largest pool the preset ever asks for, so one failure in a big scheduled
    // pool is not hidden behind older successes.
    // An autoscaled pool may grow to its max.
    let largest_schedule = preset.schedules.iter().map(|s| s.instances).max().unwrap_or(0);
    let largest_autoscale = preset.autoscale.map_or(0, |a| a.max);
    let largest = preset.desired_instances.max(largest_schedule).max(largest_autoscale);
    let n = usize::try_from(largest).unwrap_or(usize::MAX);
    // A lookback reaching before the first instant covers every build.
    let window_start = minus_secs(now, config.backoff_lookback_secs);
    let failed_in_window = |b: &&&RecentBuild| {
        b.job_status == FinishedStatus::Failed
            && window_start.is_none_or(|start| b.created_at >= start)
    };
    // Newest first, so the first failure among the N newest is the newest one: `last`.
    let last = recent.iter().take(n).find(failed_in_window)?.created_at;
    let num_failed = recent.iter().filter(failed_in_window).count();
    // Past the last representable instant, backoff lasts until the end of time.
    let until = plus_secs(last, times_secs(num_failed, config.backoff_interval_secs))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    if now > until {
        return None;
    }
    // A failure leaves the window once `created_at < now − lookback`, i.e. just after
    // `created_at + lookback`.
    let ages_out = recent
        .iter()
        .filter(failed_in_window)
        .filter_map(|b| plus_secs(b.created_at, config.backoff_lookback_secs).and_then(just_after))
        .min();
    let ends = just_after(until);
    let changes_at = ages_out.into_iter().chain(ends).min();
    Some(Backoff { until, changes_at })
}

/// rules §4 "Hard limit": with k > 0, the k newest builds exist and all failed.
pub(crate) fn hard_limited(recent: &[&RecentBuild], k: u32) -> bool {
    let Ok(k) = usize::try_from(k) else { return false };
    k > 0 && recent.len() >= k && recent[..k].iter().all(|b| b.job_status == FinishedStatus::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prebuilds::rows::tests::{id, preset, t};
    use crate::prebuilds::PresetSchedule;

    fn build(ws: u128, created_at: &str, job_status: FinishedStatus) -> RecentBuild {
        RecentBuild {
            workspace_id: id(ws),
            preset_id: id(1),
            created_at: t(created_at),
            job_status,
        }
    }

    fn config() -> ReconcilerConfig {
        ReconcilerConfig {
            backoff_interval_secs: 60,
            backoff_lookback_secs: 3600,
            failure_hard_limit: 3,
            max_pending_creates_per_preset: 0,
            failed_keep: 3,
            failed_grace_secs: 0,
        }
    }

    use FinishedStatus::{Canceled, Failed, Succeeded};

    #[test]
    fn until_is_last_failure_plus_all_failures_times_interval() {
        let mut p = preset(1);
        p.desired_instances = 2;
        let builds = [
            build(1, "2025-06-02T08:58:00Z", Failed),
            build(2, "2025-06-02T08:57:00Z", Succeeded),
            build(3, "2025-06-02T08:30:00Z", Failed), // outside the N newest, still counted
        ];
        let refs: Vec<&RecentBuild> = builds.iter().collect();
        let b = backoff(&p, &refs, &config(), t("2025-06-02T09:00:00Z")).expect("in force");
        assert_eq!(b.until, t("2025-06-02T09:00:00Z"));
        assert_eq!(b.changes_at, Some(t("2025-06-02T09:00:01Z")));
        // In force at `until` exactly, over one second later.
        assert!(backoff(&p, &refs, &config(), t("2025-06-02T09:00:01Z")).is_none());
    }

    #[test]
    fn only_the_n_newest_can_trigger_backoff() {
        let mut p = preset(1);
        p.desired_instances = 1;
        let builds =
            [build(1, "2025-06-02T08:59:00Z", Succeeded), build(2, "2025-06-02T08:58:00Z", Failed)];
        let refs: Vec<&RecentBuild> = builds.iter().collect();
        assert!(backoff(&p, &refs, &config(), t("2025-06-02T09:00:00Z")).is_none());
        // A schedule asking for two widens N to two (whether or not its window is open).
        p.schedules = vec![PresetSchedule { cron: "* 9-18 * * *".into(), instances: 2 }];
        let config = ReconcilerConfig { backoff_interval_secs: 300, ..config() };
        let b = backoff(&p, &refs, &config, t("2025-06-02T09:00:00Z")).expect("in force");
        assert_eq!(b.until, t("2025-06-02T09:03:00Z"));
    }

    #[test]
    fn failures_before_the_lookback_do_not_count() {
        let mut p = preset(1);
        p.desired_instances = 3;
        let builds = [
            build(1, "2025-06-02T08:59:30Z", Failed),
            build(2, "2025-06-02T07:59:59Z", Failed), // before now − 1 h
            build(3, "2025-06-02T08:00:00Z", Failed), // exactly at now − 1 h: counted
        ];
        let mut refs: Vec<&RecentBuild> = builds.iter().collect();
        refs.sort_by_key(|b| std::cmp::Reverse(b.created_at));
        let b = backoff(&p, &refs, &config(), t("2025-06-02T09:00:00Z")).expect("in force");
        assert_eq!(b.until, t("2025-06-02T09:01:30Z"));
        // The 08:00:00 failure leaves the window just after 09:00:00.
        assert_eq!(b.changes_at, Some(t("2025-06-02T09:00:01Z")));
    }

    #[test]
    fn no_pool_means_no_backoff() {
        let p = preset(1);
        let builds = [build(1, "2025-06-02T08:59:00Z", Failed)];
        let refs: Vec<&RecentBuild> = builds.iter().collect();
        assert!(backoff(&p, &refs, &config(), t("2025-06-02T09:00:00Z")).is_none());
    }

    #[test]
    fn hard_limit_needs_k_newest_all_failed() {
        let f = [
            build(1, "2025-06-02T08:59:00Z", Failed),
            build(2, "2025-06-02T08:58:00Z", Failed),
            build(3, "2025-06-02T08:57:00Z", Failed),
            build(4, "2025-06-02T08:56:00Z", Succeeded),
        ];
        let refs: Vec<&RecentBuild> = f.iter().collect();
        assert!(hard_limited(&refs, 3));
        assert!(!hard_limited(&refs, 4));
        assert!(!hard_limited(&refs, 0), "k = 0 disables the hard limit");
        assert!(!hard_limited(&refs[..2], 3), "fewer than k builds");
        let c = [build(5, "2025-06-02T08:59:30Z", Canceled)];
        let refs: Vec<&RecentBuild> = c.iter().chain(f.iter()).collect();
        assert!(!hard_limited(&refs, 3), "a canceled build is not a failure");
    }
}
