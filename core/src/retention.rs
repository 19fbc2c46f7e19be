//! Retention (rules §6): which rows of history may be purged. Builds (with their jobs and
//! agents) are purged only when no rule reads them any more; audit entries are read by no rule
//! and go by age alone (finished notifications are pruned by their dispatcher, rules §5).

use chrono::{DateTime, Utc};

use crate::build::Transition;
use crate::instant::minus_secs;

/// How long each kind of history is kept; 0 keeps it for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub builds_secs: u64,
    pub audit_secs: u64,
}

/// Rows older than the cutoff may go: `now − keep`; `None` when `keep` is 0 (for ever) or
/// reaches before the first instant.
pub fn cutoff(now: DateTime<Utc>, keep_secs: u64) -> Option<DateTime<Utc>> {
    if keep_secs == 0 {
        return None;
    }
    minus_secs(now, keep_secs)
}

/// One build of a workspace, as the purge sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildHistory {
    pub build_number: u32,
    pub transition: Transition,
    pub preset_named: bool,
    /// When its job finished; `None` while it has not.
    pub finished_at: Option<DateTime<Utc>>,
    /// The job failed for a reason outside the template (the reaper's, or unrunnable): the
    /// prebuild rules skip such builds when they look for the latest finished start.
    pub failed_outside_template: bool,
}

/// rules §6 "Builds": the build numbers of one workspace's `builds` that may be purged at
/// `cutoff`, ascending. A build may go when its job finished before the cutoff, and so did
/// the job of the build after it (a claim looks one build back), and it is none of the
/// builds a rule reads: the latest build (lifecycle, deadlines, claims), the newest finished
/// start and the newest one that counts as a build (backoff and the hard limit), the newest
/// build naming a preset (which preset a prebuild belongs to).
pub fn purgeable_builds(builds: &[BuildHistory], cutoff: DateTime<Utc>) -> Vec<u32> {
    let mut sorted: Vec<&BuildHistory> = builds.iter().collect();
    sorted.sort_by_key(|b| b.build_number);
    sorted.dedup_by_key(|b| b.build_number);
    let newest = |pick: &dyn Fn(&BuildHistory) -> bool| {
        sorted.iter().rev().find(|b| pick(b)).map(|b| b.build_number)
    };
    let finished_start =
        |b: &BuildHistory| b.transition == Transition::Start && b.finished_at.is_some();
    let read: Vec<u32> = [
        sorted.last().map(|b| b.build_number),
        newest(&finished_start),
        newest(&|b| finished_start(b) && !b.failed_outside_template),
        newest(&|b| b.preset_named),
    ]
    .into_iter()
    .flatten()
    .collect();
    let old = |b: &BuildHistory| b.finished_at.is_some_and(|at| at < cutoff);
    sorted
        .windows(2)
        .filter(|pair| {
            old(pair[0]) && old(pair[1]) && pair[1].build_number == pair[0].build_number + 1
        })
        .map(|pair| pair[0].build_number)
        .filter(|number| !read.contains(number))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::t;

    fn build(n: u32, transition: Transition, finished: Option<&str>) -> BuildHistory {
        BuildHistory {
            build_number: n,
            transition,
            preset_named: false,
            finished_at: finished.map(t),
            failed_outside_template: false,
        }
    }

    use Transition::{Delete, Start, Stop};

    #[test]
    fn zero_keeps_for_ever() {
        assert_eq!(cutoff(t("2025-06-02T09:00:00Z"), 0), None);
        assert_eq!(cutoff(t("2025-06-02T09:00:00Z"), 3600), Some(t("2025-06-02T08:00:00Z")));
        assert_eq!(cutoff(DateTime::<Utc>::MIN_UTC, 1), None);
    }

    #[test]
    fn old_builds_go_except_the_ones_rules_read() {
        let old = Some("2025-01-01T00:00:00Z");
        let builds = [
            BuildHistory { preset_named: true, ..build(1, Start, old) },
            build(2, Stop, old),
            build(3, Start, old),
            build(4, Stop, old),
            build(5, Start, old),
            BuildHistory { failed_outside_template: true, ..build(6, Start, old) },
            build(7, Stop, old),
        ];
        // 7 is the latest, 6 the newest finished start, 5 the newest counting as a build,
        // 1 the newest naming a preset.
        assert_eq!(purgeable_builds(&builds, t("2025-06-01T00:00:00Z")), [2, 3, 4]);
    }

    #[test]
    fn a_build_before_a_recent_one_stays() {
        let builds = [
            build(1, Start, Some("2025-01-01T00:00:00Z")),
            build(2, Stop, Some("2025-01-02T00:00:00Z")),
            build(3, Start, Some("2025-05-31T23:00:00Z")),
            build(4, Stop, Some("2025-06-01T12:00:00Z")),
            build(5, Delete, None),
        ];
        // 2 precedes 3, whose job finished before the cutoff: 2 may go, 1 too; 3 precedes 4
        // (after the cutoff) and is the newest finished start anyway.
        assert_eq!(purgeable_builds(&builds, t("2025-06-01T00:00:00Z")), [1, 2]);
        assert_eq!(purgeable_builds(&builds, t("2025-01-01T12:00:00Z")), Vec::<u32>::new());
    }
}
