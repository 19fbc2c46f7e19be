//! Autostart schedules and `next_autostart` (rules §1).

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeDelta, Utc};
use chrono_tz::Tz;

use super::local_time::{local_in, resolve_local};
use super::{CronSchedule, ScheduleError, WeekdaySet};

/// How far `next_autostart` looks (rules §1: none within 14 days → no next).
pub const AUTOSTART_HORIZON_DAYS: i64 = 14;

/// Parses an autostart schedule: day-of-month and month must be `*` (weekly).
pub fn parse_autostart(text: &str) -> Result<CronSchedule, ScheduleError> {
    let schedule = CronSchedule::parse(text)?;
    let fields = schedule.fields();
    if !(fields.day_of_month_star && fields.month_star) {
        return Err(ScheduleError::NotAllowed(
            "an autostart schedule must be weekly: its day-of-month and month fields must be `*`"
                .to_owned(),
        ));
    }
    Ok(schedule)
}

/// rules §1 `next_autostart`: the first instant strictly after `after` at which `schedule` fires
/// and whose local weekday (in the schedule's zone) is in `allowed_days`; none within 14 days
/// (inclusive) → `None`.
pub fn next_autostart(
    after: DateTime<Utc>,
    schedule: &CronSchedule,
    allowed_days: WeekdaySet,
) -> Option<DateTime<Utc>> {
    if allowed_days.is_empty() {
        return None;
    }
    let zone = schedule.zone();
    let until = after.checked_add_signed(TimeDelta::days(AUTOSTART_HORIZON_DAYS))?;
    // A date whose weekday is not allowed can still hold an allowed firing when a DST gap
    // pushes its last minute past midnight into an allowed day.
    let day_ok = |date: NaiveDate| {
        allowed_days.contains(date.weekday())
            || (allowed_days.contains(date.weekday().succ()) && gap_crosses_midnight(zone, date))
    };
    let allowed_at = |at: DateTime<Utc>| {
        schedule.local_weekday(at).is_some_and(|day| allowed_days.contains(day))
    };
    schedule.search(after, until, day_ok, allowed_at)
}

/// Whether 23:59 of `date` resolves into the next day (it lies in a gap that ends after
/// midnight): the only way a firing of one local date lands on another.
fn gap_crosses_midnight(zone: Tz, date: NaiveDate) -> bool {
    let Some(last_minute) = NaiveTime::from_hms_opt(23, 59, 0) else {
        return false;
    };
    resolve_local(zone, date.and_time(last_minute))
        .and_then(|at| local_in(zone, at))
        .is_some_and(|local| local.date() != date)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::DayName;

    use crate::t;

    fn days(days: &[DayName]) -> WeekdaySet {
        WeekdaySet::from_days(days)
    }

    #[test]
    fn weekly_only() {
        assert!(parse_autostart("CRON_TZ=Europe/Berlin 30 9 * * 1-5").is_ok());
        assert!(parse_autostart("30 9 ? ? *").is_ok());
        let err = parse_autostart("30 9 1 * *").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("must be weekly")));
        assert!(parse_autostart("30 9 * jan *").is_err());
        assert!(parse_autostart("30 9 * * 8").is_err());
    }

    #[test]
    fn skips_days_the_template_does_not_allow() {
        // Mon–Fri schedule, template allows only Wednesday; 2025-06-02 is a Monday.
        let s = parse_autostart("0 9 * * 1-5").expect("valid");
        let next = next_autostart(t("2025-06-02T10:00:00Z"), &s, days(&[DayName::Wed]));
        assert_eq!(next, Some(t("2025-06-04T09:00:00Z")));
        // Strictly after.
        let every = WeekdaySet::EVERY_DAY;
        assert_eq!(
            next_autostart(t("2025-06-02T09:00:00Z"), &s, every),
            Some(t("2025-06-03T09:00:00Z"))
        );
    }

    #[test]
    fn weekday_is_taken_in_the_schedule_zone() {
        // 00:30 Tuesday in Tokyo is 15:30Z Monday: a Tuesday-only template allows it.
        let s = parse_autostart("CRON_TZ=Asia/Tokyo 30 0 * * *").expect("valid");
        let next = next_autostart(t("2025-06-02T00:00:00Z"), &s, days(&[DayName::Tue]));
        assert_eq!(next, Some(t("2025-06-02T15:30:00Z")));
    }

    #[test]
    fn none_within_fourteen_days() {
        let s = parse_autostart("0 9 * * 1").expect("valid");
        assert_eq!(next_autostart(t("2025-06-02T10:00:00Z"), &s, days(&[DayName::Sun])), None);
        assert_eq!(next_autostart(t("2025-06-02T10:00:00Z"), &s, WeekdaySet::default()), None);
        // A week ahead is found; a Sunday-only template never sees a Monday schedule.
        let monday = parse_autostart("0 9 * * 1").expect("valid");
        assert_eq!(
            next_autostart(t("2025-06-02T09:00:00Z"), &monday, days(&[DayName::Mon])),
            Some(t("2025-06-09T09:00:00Z"))
        );
    }

    #[test]
    fn instants_at_the_ends_of_time_never_panic() {
        for text in ["CRON_TZ=America/New_York 0 9 * * *", "CRON_TZ=Pacific/Kiritimati 0 9 * * *"] {
            let s = parse_autostart(text).expect("valid");
            for at in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
                assert_eq!(next_autostart(at, &s, WeekdaySet::EVERY_DAY), None);
                assert_eq!(next_autostart(at, &s, days(&[DayName::Sun])), None);
            }
        }
    }

    #[test]
    fn dst_gap_and_fold() {
        // New York 2025-03-09 02:30 does not exist: fires at 03:00 EDT = 07:00Z.
        let s = parse_autostart("CRON_TZ=America/New_York 30 2 * * *").expect("valid");
        let every = WeekdaySet::EVERY_DAY;
        assert_eq!(
            next_autostart(t("2025-03-08T12:00:00Z"), &s, every),
            Some(t("2025-03-09T07:00:00Z"))
        );
        // 2025-11-02 01:30 happens twice: only at the first (EDT, 05:30Z).
        let s = parse_autostart("CRON_TZ=America/New_York 30 1 * * *").expect("valid");
        let first = next_autostart(t("2025-11-01T12:00:00Z"), &s, every);
        assert_eq!(first, Some(t("2025-11-02T05:30:00Z")));
        assert_eq!(
            first.and_then(|at| next_autostart(at, &s, every)),
            Some(t("2025-11-03T06:30:00Z"))
        );
    }
}
