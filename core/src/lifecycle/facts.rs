//! What every rule looks at: the workspace, the tick, and its parsed autostart schedule.

use std::fmt;

use chrono::{DateTime, Utc};

use super::Workspace;
use crate::instant::duration;
use crate::schedule::{CronSchedule, ScheduleError, WeekdaySet};

/// rules §2: `tick` = `now` truncated to the minute, from the Unix timestamp (whole seconds
/// cover chrono's whole range; nanosecond arithmetic would stop at 1677 and 2262). The first
/// representable instant is a whole minute, so the floor always exists.
pub fn tick_of(now: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(now.timestamp().div_euclid(60) * 60, 0).unwrap_or(now)
}

/// A workspace's autostart schedule, parsed once (the shell may hand over one the replay
/// parser would reject: it is then `Invalid`, never a panic).
#[derive(Debug, Clone, Copy)]
pub(crate) enum AutostartSchedule<'a> {
    /// Null or blank: no autostart.
    Unset,
    Invalid(&'a ScheduleError),
    Valid(&'a CronSchedule),
}

impl<'a> AutostartSchedule<'a> {
    pub fn from_parsed(parsed: Option<&'a Result<CronSchedule, ScheduleError>>) -> Self {
        match parsed {
            None => AutostartSchedule::Unset,
            Some(Ok(schedule)) => AutostartSchedule::Valid(schedule),
            Some(Err(err)) => AutostartSchedule::Invalid(err),
        }
    }
}

/// The schedule text worth parsing: rules §2 wants "a non-empty autostart schedule".
pub(crate) fn schedule_text(workspace: &Workspace) -> Option<&str> {
    workspace.autostart_schedule.as_deref().filter(|text| !text.trim().is_empty())
}

/// The inputs of one decision.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts<'a> {
    pub workspace: &'a Workspace,
    pub tick: DateTime<Utc>,
    pub schedule: AutostartSchedule<'a>,
}

impl Facts<'_> {
    /// rules §2: "Dormant" means `dormant_at` is set.
    pub fn is_dormant(&self) -> bool {
        self.workspace.dormant_at.is_some()
    }

    /// The template's `autostart_days`.
    pub fn allowed_days(&self) -> WeekdaySet {
        WeekdaySet::from_days(&self.workspace.template.autostart_days)
    }
}

/// `tick − since > secs`: the strict comparison rules §2 uses for dormancy, failed-build stop
/// and the delete retry. A duration too large to represent never elapses.
pub(crate) fn elapsed_more_than(since: DateTime<Utc>, tick: DateTime<Utc>, secs: u64) -> bool {
    duration(secs).is_some_and(|limit| tick.signed_duration_since(since) > limit)
}

/// An instant as explanations print it (RFC 3339, UTC, `Z`), like the JSON output.
pub(crate) fn show(at: DateTime<Utc>) -> Shown {
    Shown(at)
}

/// An instant that prints as RFC 3339 (chrono's `AutoSi` seconds, `Z`) when an explanation
/// is written, and not before.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shown(DateTime<Utc>);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::fixtures::at;

    #[test]
    fn tick_truncates_to_the_minute() {
        assert_eq!(tick_of(at("2025-06-02T09:00:59.999Z")), at("2025-06-02T09:00:00Z"));
        assert_eq!(tick_of(at("2025-06-02T09:00:00Z")), at("2025-06-02T09:00:00Z"));
        assert_eq!(tick_of(at("2025-06-02T10:59:30+02:00")), at("2025-06-02T08:59:00Z"));
    }

    /// Issue 18 item 2: `duration_trunc` works in nanoseconds (1677–2262 only); the tick
    /// must be truncated for every instant chrono can hold.
    #[test]
    fn tick_truncates_outside_the_nanosecond_range() {
        assert_eq!(tick_of(at("1500-01-01T00:00:30.5Z")), at("1500-01-01T00:00:00Z"));
        assert_eq!(tick_of(at("9999-12-31T23:59:59Z")), at("9999-12-31T23:59:00Z"));
        assert_eq!(tick_of(at("1969-12-31T23:59:59.999Z")), at("1969-12-31T23:59:00Z"));
        let min = DateTime::<Utc>::MIN_UTC;
        assert!(tick_of(min) >= min && tick_of(min).timestamp() % 60 == 0);
        let max = DateTime::<Utc>::MAX_UTC;
        assert!(tick_of(max) <= max && tick_of(max).timestamp() % 60 == 0);
        assert_eq!(tick_of(max).timestamp_subsec_nanos(), 0);
    }

    #[test]
    fn elapsed_is_strict_and_keeps_sub_seconds() {
        let since = at("2025-06-02T09:00:00.500Z");
        assert!(!elapsed_more_than(since, at("2025-06-02T09:01:00Z"), 60));
        assert!(!elapsed_more_than(since, at("2025-06-02T09:01:00.500Z"), 60));
        assert!(elapsed_more_than(since, at("2025-06-02T09:02:00Z"), 60));
    }

    #[test]
    fn absurd_durations_never_elapse_nor_panic() {
        let tick = at("2025-06-02T09:00:00Z");
        assert!(!elapsed_more_than(at("1970-01-01T00:00:00Z"), tick, u64::MAX));
    }
}
