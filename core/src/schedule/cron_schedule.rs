//! A parsed schedule and its firing instants (rules §1).
//!
//! Firings are found by walking local wall-clock candidates in order and resolving each with
//! the DST rules (`local_time::resolve_local`), not with the `cron` crate's iterator: it skips a
//! local time in a spring gap (Coder's defect) instead of firing at the end of the gap.
//! Resolution is monotonic in local time, so the first resolved candidate after `after` is
//! the next firing, and two candidates in one gap collapse into one firing.

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;

use super::cron_expr::{split_zone, CronFields};
use super::local_time::{local_in, resolve_local};
use super::ScheduleError;

/// How far `next_after` looks: a 29 February schedule can be 8 years away (2096 → 2104).
const NEXT_HORIZON_DAYS: i64 = 8 * 366 + 2;

/// A parsed five-field cron expression with an optional `CRON_TZ=` zone (rules §1).
#[derive(Debug, Clone, PartialEq)]
pub struct CronSchedule {
    source: String,
    zone: Tz,
    fields: CronFields,
}

impl CronSchedule {
    /// Parses the cron dialect of rules §1.
    pub fn parse(text: &str) -> Result<CronSchedule, ScheduleError> {
        let (zone, body) = split_zone(text)?;
        let fields = CronFields::parse(body)?;
        Ok(CronSchedule { source: text.to_owned(), zone, fields })
    }

    /// `CRON_TZ=UTC 0 0 * * *`, the default quiet hours (rules §3), built without parsing so
    /// that falling back to it cannot fail.
    pub(crate) fn default_quiet_hours() -> CronSchedule {
        let fields = CronFields {
            minutes: 1,
            hours: 1,
            days_of_month: (1..=31).fold(0, |bits, d| bits | 1 << d),
            months: (1..=12).fold(0, |bits, m| bits | 1 << m),
            days_of_week: 0b111_1111,
            minute_star: false,
            day_of_month_star: true,
            month_star: true,
            day_of_week_star: true,
        };
        CronSchedule { source: super::DEFAULT_QUIET_HOURS.to_owned(), zone: Tz::UTC, fields }
    }

    /// The zone the schedule is evaluated in (UTC unless `CRON_TZ=` says otherwise).
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The text the schedule was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub(crate) fn fields(&self) -> &CronFields {
        &self.fields
    }

    /// Whether the schedule fires at local wall-clock minute `local` (ignoring DST).
    pub fn matches_local(&self, local: chrono::NaiveDateTime) -> bool {
        self.fields.matches_local(local)
    }

    /// The first firing instant strictly after `after` (none within 8 years → `None`).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let until = after.checked_add_signed(TimeDelta::days(NEXT_HORIZON_DAYS))?;
        self.search(after, until, |_| true, |_| true)
    }

    /// The first firing instant in (`after`, `until`] that `accept`s, looking only at local
    /// dates that `day_ok` (a cheap pre-filter: it must not reject a date holding an accepted
    /// firing).
    pub(crate) fn search(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        day_ok: impl Fn(NaiveDate) -> bool,
        accept: impl Fn(DateTime<Utc>) -> bool,
    ) -> Option<DateTime<Utc>> {
        // Local times beyond chrono's range of dates: no firing there (never a panic).
        let start = local_in(self.zone, after)?;
        // A gap can push a firing past midnight, so look one local day beyond `until`; near
        // the end of time, up to the last local date there is.
        let until_date =
            local_in(self.zone, until).map(|local| local.date()).unwrap_or(chrono::NaiveDate::MAX);
        let last_date = until_date.succ_opt().unwrap_or(until_date);
        let mut date = start.date();
        let mut first_day = true;
        while date <= last_date {
            if self.fields.matches_date(date) && day_ok(date) {
                let (from_hour, from_minute) =
                    if first_day { (start.hour(), start.minute()) } else { (0, 0) };
                for hour in bits_from(u64::from(self.fields.hours), from_hour) {
                    let minute_floor = if hour == from_hour { from_minute } else { 0 };
                    for minute in bits_from(self.fields.minutes, minute_floor) {
                        let at = resolve_local(self.zone, date.and_hms_opt(hour, minute, 0)?)?;
                        if at > until {
                            return None;
                        }
                        if at > after && accept(at) {
                            return Some(at);
                        }
                    }
                }
            }
            first_day = false;
            date = date.succ_opt()?;
        }
        None
    }

    /// The local weekday of instant `at` in the schedule's zone (`None` when its local date
    /// lies outside chrono's range).
    pub fn local_weekday(&self, at: DateTime<Utc>) -> Option<chrono::Weekday> {
        local_in(self.zone, at).map(|local| local.weekday())
    }
}

impl std::fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

/// The set bits of `bits` from bit `from` upwards, in increasing order.
fn bits_from(bits: u64, from: u32) -> impl Iterator<Item = u32> {
    let mut rest = bits.checked_shr(from).unwrap_or(0).checked_shl(from).unwrap_or(0);
    std::iter::from_fn(move || {
        if rest == 0 {
            return None;
        }
        let bit = rest.trailing_zeros();
        rest &= rest - 1;
        Some(bit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::t;

    fn next(schedule: &str, after: &str) -> Option<DateTime<Utc>> {
        CronSchedule::parse(schedule).expect("valid").next_after(t(after))
    }

    #[test]
    fn one_to_five_fires_monday_to_friday() {
        // 2025-06-06 is a Friday: the next firings skip the weekend.
        let s = CronSchedule::parse("0 9 * * 1-5").expect("valid");
        let mut at = t("2025-06-05T12:00:00Z");
        let mut seen = Vec::new();
        for _ in 0..6 {
            at = s.next_after(at).expect("fires");
            seen.push(at);
        }
        assert_eq!(
            seen,
            ["2025-06-06", "2025-06-09", "2025-06-10", "2025-06-11", "2025-06-12", "2025-06-13"]
                .map(|day| t(&format!("{day}T09:00:00Z")))
        );
    }

    #[test]
    fn seven_is_sunday() {
        // 2025-06-08 is a Sunday.
        assert_eq!(next("0 9 * * 7", "2025-06-02T00:00:00Z"), Some(t("2025-06-08T09:00:00Z")));
        assert_eq!(next("0 9 * * 0", "2025-06-02T00:00:00Z"), Some(t("2025-06-08T09:00:00Z")));
    }

    #[test]
    fn strictly_after() {
        assert_eq!(next("0 9 * * *", "2025-06-02T09:00:00Z"), Some(t("2025-06-03T09:00:00Z")));
        assert_eq!(next("0 9 * * *", "2025-06-02T08:59:59Z"), Some(t("2025-06-02T09:00:00Z")));
        assert_eq!(next("* * * * *", "2025-06-02T09:00:00.5Z"), Some(t("2025-06-02T09:01:00Z")));
    }

    #[test]
    fn cron_tz_zone() {
        // 09:30 in Berlin (CEST, +2) is 07:30Z.
        let s = CronSchedule::parse("CRON_TZ=Europe/Berlin 30 9 * * 1-5").expect("valid");
        assert_eq!(s.zone(), Tz::Europe__Berlin);
        assert_eq!(s.next_after(t("2025-06-02T00:00:00Z")), Some(t("2025-06-02T07:30:00Z")));
        // Kolkata is +05:30.
        let s = CronSchedule::parse("CRON_TZ=Asia/Kolkata 0 9 * * *").expect("valid");
        assert_eq!(s.next_after(t("2025-06-02T00:00:00Z")), Some(t("2025-06-02T03:30:00Z")));
        assert!(CronSchedule::parse("CRON_TZ=Europe/Nowhere 0 9 * * *").is_err());
    }

    #[test]
    fn or_rule_in_firings() {
        // The 1st of the month or a Monday; 2025-06-01 is a Sunday, 2025-06-02 a Monday.
        let s = CronSchedule::parse("0 0 1 * mon").expect("valid");
        let first = s.next_after(t("2025-05-31T12:00:00Z"));
        assert_eq!(first, Some(t("2025-06-01T00:00:00Z")));
        assert_eq!(first.and_then(|at| s.next_after(at)), Some(t("2025-06-02T00:00:00Z")));
    }

    #[test]
    fn spring_gap_fires_at_the_end_of_the_gap() {
        // London 2025-03-30: 01:30 does not exist; it fires at 02:00 BST = 01:00Z, once.
        let s = CronSchedule::parse("CRON_TZ=Europe/London 30 1 * * *").expect("valid");
        assert_eq!(s.next_after(t("2025-03-29T12:00:00Z")), Some(t("2025-03-30T01:00:00Z")));
        assert_eq!(s.next_after(t("2025-03-30T01:00:00Z")), Some(t("2025-03-31T00:30:00Z")));
        // Several firings in the gap collapse into one.
        let s = CronSchedule::parse("CRON_TZ=America/New_York */20 2 * * *").expect("valid");
        assert_eq!(s.next_after(t("2025-03-09T06:00:00Z")), Some(t("2025-03-09T07:00:00Z")));
        assert_eq!(s.next_after(t("2025-03-09T07:00:00Z")), Some(t("2025-03-10T06:00:00Z")));
    }

    #[test]
    fn autumn_fold_fires_once_at_the_first_occurrence() {
        // London 2025-10-26: 01:30 happens at 00:30Z (BST) and 01:30Z (GMT); only the first.
        let s = CronSchedule::parse("CRON_TZ=Europe/London 30 1 * * *").expect("valid");
        assert_eq!(s.next_after(t("2025-10-25T12:00:00Z")), Some(t("2025-10-26T00:30:00Z")));
        assert_eq!(s.next_after(t("2025-10-26T00:30:00Z")), Some(t("2025-10-27T01:30:00Z")));
        // Asked from inside the second pass, the fold is already over.
        assert_eq!(s.next_after(t("2025-10-26T01:10:00Z")), Some(t("2025-10-27T01:30:00Z")));
    }

    /// Issue 18 item 1: chrono's instants reach ±262143 years; a zoned local time beyond that
    /// range must give "no firing", never a panic.
    #[test]
    fn instants_at_the_ends_of_time_never_panic() {
        let s = CronSchedule::parse("CRON_TZ=America/New_York 0 9 * * *").expect("valid");
        let far = CronSchedule::parse("CRON_TZ=Asia/Tokyo 0 9 * * *").expect("valid");
        for at in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
            for s in [&s, &far] {
                assert!(s.next_after(at).is_none_or(|next| next > at));
                let _ = s.local_weekday(at);
            }
        }
        // Tokyo's first local days exist: 09:00 local (LMT +9:18:59) on the second day.
        let min = DateTime::<Utc>::MIN_UTC;
        assert_eq!(far.next_after(min), Some(t("-262143-01-01T23:41:01Z")));
        assert_eq!(s.next_after(DateTime::<Utc>::MAX_UTC), None);
    }

    #[test]
    fn default_quiet_hours_are_what_the_text_says() {
        assert_eq!(
            CronSchedule::parse(crate::schedule::DEFAULT_QUIET_HOURS).ok(),
            Some(CronSchedule::default_quiet_hours())
        );
    }

    #[test]
    fn never_firing_schedule_gives_none() {
        assert_eq!(next("0 0 30 2 *", "2025-01-01T00:00:00Z"), None);
        assert_eq!(next("0 0 29 2 *", "2097-01-01T00:00:00Z"), Some(t("2104-02-29T00:00:00Z")));
    }
}
