//! What every rule looks at: the workspace, the tick, and its parsed autostart schedule.

use std::fmt;

use chrono::{DateTime, Datelike, DurationRound, TimeDelta, Timelike, Utc};

use super::Workspace;
use crate::schedule::{CronSchedule, ScheduleError, WeekdaySet};

/// SPEC §2: `tick` = `now` truncated to the minute.
pub fn tick_of(now: DateTime<Utc>) -> DateTime<Utc> {
    now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now)
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

/// The schedule text worth parsing: SPEC §2 wants "a non-empty autostart schedule".
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
    /// SPEC §2: "Dormant" means `dormant_at` is set.
    pub fn is_dormant(&self) -> bool {
        self.workspace.dormant_at.is_some()
    }

    /// The template's `autostart_days`.
    pub fn allowed_days(&self) -> WeekdaySet {
        WeekdaySet::from_days(&self.workspace.template.autostart_days)
    }
}

/// `secs` as a duration; `None` when it is too large to represent (it then never elapses).
pub(crate) fn duration(secs: u64) -> Option<TimeDelta> {
    i64::try_from(secs).ok().and_then(TimeDelta::try_seconds)
}

/// `tick − since > secs`: the strict comparison SPEC §2 uses for dormancy, failed-build stop
/// and the delete retry.
pub(crate) fn elapsed_more_than(since: DateTime<Utc>, tick: DateTime<Utc>, secs: u64) -> bool {
    duration(secs).is_some_and(|limit| tick.signed_duration_since(since) > limit)
}

/// `at + secs`, or `None` past the end of representable time.
pub(crate) fn plus_secs(at: DateTime<Utc>, secs: u64) -> Option<DateTime<Utc>> {
    duration(secs).and_then(|delta| at.checked_add_signed(delta))
}

/// An instant as explanations print it (RFC 3339, UTC, `Z`), like the JSON output.
pub(crate) fn show(at: DateTime<Utc>) -> Shown {
    Shown(at)
}

/// `at.to_rfc3339_opts(SecondsFormat::AutoSi, true)`, written straight into the explanation
/// instead of into a string of its own (a plan prints a few instants per workspace).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shown(DateTime<Utc>);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.0.naive_utc();
        // A leap second is stored as nanoseconds ≥ 1 s; RFC 3339 writes it as second 60.
        let (mut second, mut nano) = (at.second(), at.nanosecond());
        if nano >= 1_000_000_000 {
            second += 1;
            nano -= 1_000_000_000;
        }
        let year = at.year();
        let mut text = *b"0000-00-00T00:00:00";
        let (start, fields) = match u32::try_from(year) {
            Ok(year) if year <= 9999 => (0, [year / 100, year % 100]),
            _ => {
                // Like chrono: out-of-range years carry their sign.
                write!(f, "{year:+05}")?;
                (4, [0, 0])
            }
        };
        let values = [fields[0], fields[1], at.month(), at.day(), at.hour(), at.minute(), second];
        for (at, value) in [0, 2, 5, 8, 11, 14, 17].into_iter().zip(values) {
            // Each value is below 100, so both digits are ASCII.
            text[at] = b'0' + u8::try_from(value / 10 % 10).unwrap_or(0);
            text[at + 1] = b'0' + u8::try_from(value % 10).unwrap_or(0);
        }
        let text = text.get(start..).unwrap_or_default();
        f.write_str(std::str::from_utf8(text).map_err(|_| fmt::Error)?)?;
        if nano == 0 {
        } else if nano % 1_000_000 == 0 {
            write!(f, ".{:03}", nano / 1_000_000)?;
        } else if nano % 1_000 == 0 {
            write!(f, ".{:06}", nano / 1_000)?;
        } else {
            write!(f, ".{nano:09}")?;
        }
        f.write_str("Z")
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

    #[test]
    fn elapsed_is_strict_and_keeps_sub_seconds() {
        let since = at("2025-06-02T09:00:00.500Z");
        assert!(!elapsed_more_than(since, at("2025-06-02T09:01:00Z"), 60));
        assert!(!elapsed_more_than(since, at("2025-06-02T09:01:00.500Z"), 60));
        assert!(elapsed_more_than(since, at("2025-06-02T09:02:00Z"), 60));
    }

    #[test]
    fn instants_show_as_chrono_writes_rfc_3339() {
        use chrono::{NaiveDate, SecondsFormat};
        let mut instants: Vec<DateTime<Utc>> = [
            "2025-06-02T09:00:00Z",
            "2025-06-02T09:00:00.5Z",
            "2025-06-02T09:00:00.123456Z",
            "2025-06-02T09:00:00.123456789Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999Z",
        ]
        .map(at)
        .to_vec();
        instants.extend([DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC]);
        // A leap second, and years outside 0..=9999.
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_250_000_000))
            .expect("leap second");
        instants.push(leap.and_utc());
        for year in [-1, -12_345, 10_000, 12_345] {
            let date = NaiveDate::from_ymd_opt(year, 3, 4).and_then(|d| d.and_hms_opt(5, 6, 7));
            instants.push(date.expect("date").and_utc());
        }
        for step in 0..2000_i64 {
            let nanos = step * 7_777_777_777_777 + step % 3 * 1_000_000;
            instants.push(DateTime::from_timestamp_nanos(nanos));
        }
        for instant in instants {
            assert_eq!(
                show(instant).to_string(),
                instant.to_rfc3339_opts(SecondsFormat::AutoSi, true)
            );
        }
    }

    #[test]
    fn absurd_durations_never_elapse_nor_panic() {
        let tick = at("2025-06-02T09:00:00Z");
        assert!(!elapsed_more_than(at("1970-01-01T00:00:00Z"), tick, u64::MAX));
        assert_eq!(plus_secs(tick, u64::MAX), None);
        assert_eq!(plus_secs(tick, 60), Some(at("2025-06-02T09:01:00Z")));
    }
}
