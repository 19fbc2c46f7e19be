//! The cron dialect of rules §1: five fields `minute hour day-of-month month day-of-week`, an
//! optional `CRON_TZ=<IANA zone> ` prefix (default UTC), crontab day-of-week numbering and the
//! classic day-of-month / day-of-week OR rule.
//!
//! Built on the `cron` crate: it parses the minute, hour, day-of-month and month fields (lists,
//! ranges, `*`, steps `N/S` = from N to the maximum, month names in any case) once the
//! expression is given the seconds field it wants; the parsed sets are copied into bit sets so
//! that membership is a bit test (the window overlap check makes thousands). Three parts are
//! evaluated here because the crate cannot meet the spec:
//! - **Day of week**: the crate numbers Sunday 1 … Saturday 7 and has no 0, so crontab's `0`
//!   and `7` = Sunday, a range ending in `7` (`5-7`) and `N/S` (N to 7, Sunday) have no faithful
//!   item-by-item translation; this module parses that field itself.
//! - **The OR rule**: the crate always requires both day fields to match.
//! - **DST**: the crate skips a local time that falls in a spring gap (and may fire twice in a
//!   fold); the firing search lives in `firing.rs`.

use std::str::FromStr;

use chrono::{Datelike, NaiveDate, Timelike, Weekday};
use chrono_tz::Tz;
use cron::TimeUnitSpec;

use super::ScheduleError;

/// The five fields of an expression as sets of values, plus which fields were written as `*`.
///
/// A field counts as `*` (unrestricted) when one of its list items is `*` or `?` without a
/// step (or with step 1), as in classic cron: `*/2` restricts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CronFields {
    /// Bit m = minute m (0–59).
    pub minutes: u64,
    /// Bit h = hour h (0–23).
    pub hours: u32,
    /// Bit d = day of month d (1–31).
    pub days_of_month: u32,
    /// Bit m = month m (1–12).
    pub months: u16,
    /// Bit d = weekday d counted from Sunday = 0.
    pub days_of_week: u8,
    pub minute_star: bool,
    pub day_of_month_star: bool,
    pub month_star: bool,
    pub day_of_week_star: bool,
}

const FIELD_NAMES: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];

impl CronFields {
    /// Parses the five fields (no `CRON_TZ=` prefix).
    pub fn parse(body: &str) -> Result<CronFields, ScheduleError> {
        let parts: Vec<&str> = body.split_ascii_whitespace().collect();
        let [minute, hour, day_of_month, month, day_of_week] = parts[..] else {
            return Err(ScheduleError::Syntax(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                parts.len()
            )));
        };
        let parsed = crate_schedule([minute, hour, day_of_month, month])?;
        let (days_of_week, day_of_week_star) =
            parse_day_of_week(day_of_week).map_err(|why| field_error(4, day_of_week, &why))?;
        Ok(CronFields {
            minutes: parsed.minutes().iter().fold(0, |bits, m| bits | 1u64 << m),
            hours: parsed.hours().iter().fold(0, |bits, h| bits | 1u32 << h),
            days_of_month: parsed.days_of_month().iter().fold(0, |bits, d| bits | 1u32 << d),
            months: parsed.months().iter().fold(0, |bits, m| bits | 1u16 << m),
            days_of_week,
            minute_star: is_star(minute),
            day_of_month_star: is_star(day_of_month),
            month_star: is_star(month),
            day_of_week_star,
        })
    }

    pub fn has_minute(&self, minute: u32) -> bool {
        self.minutes & (1u64 << minute) != 0
    }

    pub fn has_hour(&self, hour: u32) -> bool {
        self.hours & (1u32 << hour) != 0
    }

    pub fn has_month(&self, month: u32) -> bool {
        self.months & (1u16 << month) != 0
    }

    /// The day rule alone (rules §1): when both day fields are restricted a day matches if
    /// either does; when one is `*`, both must.
    pub fn day_rule(&self, day_of_month: u32, weekday: Weekday) -> bool {
        let by_month_day = self.days_of_month & (1u32 << day_of_month) != 0;
        let by_weekday = self.days_of_week & (1u8 << weekday.num_days_from_sunday()) != 0;
        if self.day_of_month_star || self.day_of_week_star {
            by_month_day && by_weekday
        } else {
            by_month_day || by_weekday
        }
    }

    /// Whether the schedule can fire on local date `date` (month and day rule).
    pub fn matches_date(&self, date: NaiveDate) -> bool {
        self.has_month(date.month()) && self.day_rule(date.day(), date.weekday())
    }

    /// Whether the schedule fires at local wall-clock time `local` (to the minute).
    pub fn matches_local(&self, local: chrono::NaiveDateTime) -> bool {
        self.matches_date(local.date())
            && self.has_hour(local.hour())
            && self.has_minute(local.minute())
    }

    /// Number of distinct minutes and hours (for "one minute and one hour" checks).
    pub fn minute_count(&self) -> u32 {
        self.minutes.count_ones()
    }

    pub fn hour_count(&self) -> u32 {
        self.hours.count_ones()
    }
}

/// Splits an optional `CRON_TZ=<zone> ` prefix off `text`: the zone (UTC when absent) and the
/// five fields.
pub(crate) fn split_zone(text: &str) -> Result<(Tz, &str), ScheduleError> {
    let text = text.trim();
    let Some(rest) = text.strip_prefix("CRON_TZ=") else {
        return Ok((Tz::UTC, text));
    };
    let (name, body) = rest.split_once(|c: char| c.is_ascii_whitespace()).unwrap_or((rest, ""));
    Ok((parse_zone(name)?, body))
}

/// An IANA zone name (exact spelling, as the tz database writes it).
pub(crate) fn parse_zone(name: &str) -> Result<Tz, ScheduleError> {
    if name.is_empty() {
        return Err(ScheduleError::Zone("no time zone given".to_owned()));
    }
    Tz::from_str(name).map_err(|_| {
        ScheduleError::Zone(format!(
            "unknown time zone {name:?} (expected an IANA name such as Europe/Berlin)"
        ))
    })
}

/// The crate parses minute, hour, day-of-month and month; its seconds field is pinned to 0 and
/// its day-of-week left at `*` (evaluated by `parse_day_of_week`).
fn crate_schedule(fields: [&str; 4]) -> Result<cron::Schedule, ScheduleError> {
    let expression = |fields: [&str; 4]| {
        let [minute, hour, day_of_month, month] = fields.map(any_as_star);
        format!("0 {minute} {hour} {day_of_month} {month} *")
    };
    if let Ok(schedule) = cron::Schedule::from_str(&expression(fields)) {
        return Ok(schedule);
    }
    // Parse each field alone to say which one is wrong.
    for (index, text) in fields.iter().enumerate() {
        let mut alone = ["*"; 4];
        alone[index] = text;
        if let Err(err) = cron::Schedule::from_str(&expression(alone)) {
            return Err(crate_field_error(index, text, &err.to_string()));
        }
    }
    Err(ScheduleError::Syntax(format!("invalid cron expression {:?}", fields.join(" "))))
}

/// The crate accepts `?` only in the day fields; the dialect accepts it anywhere as `*`.
fn any_as_star(field: &str) -> String {
    field.replace('?', "*")
}

/// The crate's message is the expression, a caret line, then the reason; keep the reason and
/// say what is allowed (its "must be less than 59" reads as if 59 were not).
fn crate_field_error(index: usize, text: &str, message: &str) -> ScheduleError {
    const ALLOWED: [&str; 4] = ["0-59", "0-23", "1-31", "1-12 or jan-dec"];
    let reason = message.lines().last().map(str::trim).unwrap_or_default();
    let reason = if reason.is_empty() || reason.starts_with('^') {
        "not a valid value"
    } else if reason.contains("must be less than") || reason.contains("must be greater than") {
        "out of range"
    } else {
        reason
    };
    let allowed = ALLOWED.get(index).copied().unwrap_or_default();
    field_error(index, text, &format!("{reason} (allowed: {allowed})"))
}

fn field_error(index: usize, text: &str, why: &str) -> ScheduleError {
    let name = FIELD_NAMES.get(index).copied().unwrap_or("cron");
    ScheduleError::Syntax(format!("{name} field {text:?}: {why}"))
}

/// `*` or `?`, optionally with step 1, is "every value" (and counts as `*` for the OR rule).
fn is_star_item(item: &str) -> bool {
    let (base, step) = match item.split_once('/') {
        Some((base, step)) => (base, Some(step)),
        None => (item, None),
    };
    matches!(base, "*" | "?") && step.is_none_or(|step| step.parse::<u32>() == Ok(1))
}

fn is_star(field: &str) -> bool {
    field.split(',').any(is_star_item)
}

/// The day-of-week field in crontab numbering: 0 or 7 = Sunday, 1 = Monday … 6 = Saturday,
/// names `sun`..`sat` (any case); lists, ranges, `*`, `?`, steps. The field's values run
/// 0–7, so `*` is 0–7 and `N/S` runs from N to 7 (crontab's maximum; `1/2` = Mon, Wed, Fri,
/// Sun, like `1-7/2`). Returns the set (bit 0 = Sunday) and whether the field counts as `*`.
fn parse_day_of_week(field: &str) -> Result<(u8, bool), String> {
    let mut days = 0u8;
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => (base, Some(parse_step(step)?)),
            None => (item, None),
        };
        let (first, last) = match base {
            "*" | "?" => (0, 7),
            _ => match base.split_once('-') {
                Some((first, last)) => {
                    let first = day_value(first)?;
                    let last = range_end(first, day_value(last)?, last);
                    if first > last {
                        return Err(format!("range {base:?} runs backwards"));
                    }
                    (first, last)
                }
                None => {
                    let day = day_value(base)?;
                    // `N/S` = from N to the maximum, 7.
                    if step.is_some() {
                        (day, 7)
                    } else {
                        (day, day)
                    }
                }
            },
        };
        for day in (first..=last).step_by(usize::from(step.unwrap_or(1))) {
            days |= 1 << (day % 7);
        }
    }
    Ok((days, is_star(field)))
}

fn parse_step(text: &str) -> Result<u8, String> {
    match text.parse::<u8>() {
        Ok(step @ 1..=7) => Ok(step),
        _ => Err(format!("step {text:?} must be a number from 1 to 7")),
    }
}

/// The end of a range from `first`: the name `sun` (day 0) ends a range that starts after
/// Sunday as 7, so `fri-sun` reads as `5-7`; from Sunday itself it stays 0, so `sun-sun` is
/// Sunday alone (not `0-7`, every day). A number is taken as written (`0-7` is every day).
fn range_end(first: u8, last: u8, text: &str) -> u8 {
    let named_sunday = last == 0 && text.eq_ignore_ascii_case("sun");
    if named_sunday && first > 0 {
        7
    } else {
        last
    }
}

/// A day number 0–7 or name (`sun` = 0).
fn day_value(text: &str) -> Result<u8, String> {
    const NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    if let Some((day, _)) = (0u8..).zip(NAMES).find(|(_, name)| name.eq_ignore_ascii_case(text)) {
        return Ok(day);
    }
    match text.parse::<u8>() {
        Ok(day @ 0..=7) if text.bytes().all(|b| b.is_ascii_digit()) => Ok(day),
        _ => Err(format!(
            "{text:?} is not a day of the week (0-7 with 0 and 7 = Sunday, or sun..sat)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text: &str) -> CronFields {
        CronFields::parse(text).unwrap_or_else(|err| panic!("{text}: {err}"))
    }

    fn days(text: &str) -> Vec<Weekday> {
        let parsed = fields(&format!("0 0 * * {text}"));
        [
            Weekday::Sun,
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
        ]
        .into_iter()
        .filter(|day| parsed.days_of_week & (1 << day.num_days_from_sunday()) != 0)
        .collect()
    }

    #[test]
    fn one_to_five_is_monday_to_friday() {
        use Weekday::*;
        assert_eq!(days("1-5"), vec![Mon, Tue, Wed, Thu, Fri]);
        assert_eq!(days("mon-fri"), vec![Mon, Tue, Wed, Thu, Fri]);
        assert_eq!(days("MON-Fri"), vec![Mon, Tue, Wed, Thu, Fri]);
    }

    #[test]
    fn zero_and_seven_are_sunday() {
        use Weekday::*;
        assert_eq!(days("0"), vec![Sun]);
        assert_eq!(days("7"), vec![Sun]);
        assert_eq!(days("sun"), vec![Sun]);
        assert_eq!(days("5-7"), vec![Sun, Fri, Sat]);
        assert_eq!(days("fri-sun"), vec![Sun, Fri, Sat]);
        assert_eq!(days("0-7"), vec![Sun, Mon, Tue, Wed, Thu, Fri, Sat]);
        assert_eq!(days("1-7"), vec![Sun, Mon, Tue, Wed, Thu, Fri, Sat]);
    }

    #[test]
    fn day_of_week_lists_and_steps() {
        use Weekday::*;
        assert_eq!(days("*/2"), vec![Sun, Tue, Thu, Sat]);
        assert_eq!(days("2/2"), vec![Tue, Thu, Sat]);
        assert_eq!(days("1-5/2"), vec![Mon, Wed, Fri]);
        assert_eq!(days("mon,wed,6"), vec![Mon, Wed, Sat]);
        assert_eq!(days("?"), vec![Sun, Mon, Tue, Wed, Thu, Fri, Sat]);
        assert_eq!(days("7/3"), vec![Sun]);
    }

    /// Issue 18 item 3: crontab semantics for every way of writing Sunday. `sun` names day 0;
    /// it ends a range as 7 only when the range starts after Sunday, so `sun-sun` is Sunday
    /// alone (not 0–7, every day). `N/S` runs to the field's maximum, 7.
    #[test]
    fn sunday_in_ranges_names_and_steps() {
        use Weekday::*;
        let all = vec![Sun, Mon, Tue, Wed, Thu, Fri, Sat];
        assert_eq!(days("sun-sun"), vec![Sun]);
        assert_eq!(days("SUN-Sun"), vec![Sun]);
        assert_eq!(days("0-0"), vec![Sun]);
        assert_eq!(days("7-7"), vec![Sun]);
        assert_eq!(days("0-sun"), vec![Sun]);
        assert_eq!(days("sun-0"), vec![Sun]);
        assert_eq!(days("7-sun"), vec![Sun]);
        assert_eq!(days("sat-sun"), vec![Sun, Sat]);
        assert_eq!(days("6-7"), vec![Sun, Sat]);
        assert_eq!(days("sun-sat"), all);
        assert_eq!(days("mon-sun"), all);
        assert_eq!(days("sun-7"), all);
        assert_eq!(days("5-7/2"), vec![Sun, Fri]);
        assert_eq!(days("fri-sun/2"), vec![Sun, Fri]);
        assert_eq!(days("sun-sun/2"), vec![Sun]);
        assert_eq!(days("0-7/7"), vec![Sun]);
        assert_eq!(days("*/7"), vec![Sun]);
        assert_eq!(days("*/3"), vec![Sun, Wed, Sat]);
        assert_eq!(days("1/2"), vec![Sun, Mon, Wed, Fri]);
        assert_eq!(days("mon/3"), vec![Sun, Mon, Thu]);
        assert_eq!(days("sun/2"), vec![Sun, Tue, Thu, Sat]);
        assert_eq!(days("6/1"), vec![Sun, Sat]);
        assert_eq!(days("7/1"), vec![Sun]);
        assert_eq!(days("sat,sun"), vec![Sun, Sat]);
        assert!(CronFields::parse("0 0 * * sun-sat-mon").is_err());
        assert!(CronFields::parse("0 0 * * 7-0").is_err());
        assert!(CronFields::parse("0 0 * * sat-fri").is_err());
    }

    #[test]
    fn other_fields_through_the_crate() {
        let f = fields("*/15 9-17 1,15 jan-MAR,dec ?");
        assert_eq!(f.minutes, 1 | 1 << 15 | 1 << 30 | 1 << 45);
        assert_eq!(f.hours, (9..=17).fold(0, |bits, h| bits | 1 << h));
        assert_eq!(f.days_of_month, 1 << 1 | 1 << 15);
        assert_eq!(f.months, 1 << 1 | 1 << 2 | 1 << 3 | 1 << 12);
        assert!(f.day_of_week_star && !f.day_of_month_star && !f.minute_star);
        // `N/S` runs from N to the maximum.
        assert_eq!(fields("50/5 20/2 * * *").minutes, 1 << 50 | 1 << 55);
        assert_eq!(fields("50/5 20/2 * * *").hours, 1 << 20 | 1 << 22);
        assert!(fields("? ? ? ? ?").minute_star);
    }

    #[test]
    fn or_rule_when_both_day_fields_are_restricted() {
        // The 13th of the month or any Friday.
        let f = fields("0 0 13 * 5");
        assert!(f.day_rule(13, Weekday::Mon));
        assert!(f.day_rule(2, Weekday::Fri));
        assert!(!f.day_rule(2, Weekday::Mon));
        // One side `*`: both must match (the `*` side always does).
        let f = fields("0 0 * * 5");
        assert!(!f.day_rule(13, Weekday::Mon));
        assert!(f.day_rule(2, Weekday::Fri));
        let f = fields("0 0 13 * *");
        assert!(f.day_rule(13, Weekday::Mon));
        assert!(!f.day_rule(2, Weekday::Fri));
        // `*/2` restricts, so the OR rule applies.
        let f = fields("0 0 */2 * 5");
        assert!(f.day_rule(2, Weekday::Fri) && f.day_rule(3, Weekday::Mon));
        assert!(!f.day_rule(2, Weekday::Mon));
    }

    #[test]
    fn malformed_expressions_say_which_field() {
        let err = |text: &str| CronFields::parse(text).err().map(|e| e.to_string());
        assert!(err("0 9 * *").is_some_and(|e| e.contains("expected 5 fields")));
        assert!(err("0 9 * * * *").is_some_and(|e| e.contains("found 6")));
        assert_eq!(
            err("60 9 * * *").as_deref(),
            Some("minute field \"60\": out of range (allowed: 0-59)")
        );
        assert_eq!(
            err("0 9 * foo *").as_deref(),
            Some(
                "month field \"foo\": 'foo' is not a valid month name. (allowed: 1-12 or jan-dec)"
            )
        );
        assert_eq!(
            err("0,,1 9 * * *").as_deref(),
            Some("minute field \"0,,1\": not a valid value (allowed: 0-59)")
        );
        assert!(err("0 24 * * *").is_some_and(|e| e.starts_with("hour field")));
        assert!(err("0 9 32 * *").is_some_and(|e| e.starts_with("day-of-month field")));
        assert!(err("0 9 * 13 *").is_some_and(|e| e.starts_with("month field")));
        assert!(err("0 9 * foo *").is_some_and(|e| e.starts_with("month field")));
        assert!(err("0 9 * * 8").is_some_and(|e| e.starts_with("day-of-week field")));
        assert!(err("0 9 * * 5-1").is_some_and(|e| e.contains("backwards")));
        assert!(err("0 9 * * */0").is_some_and(|e| e.contains("step")));
        assert!(err("0 9 * * monday").is_some());
        assert!(err("0 9 * * 1,").is_some());
        assert!(err("*/0 9 * * *").is_some());
        assert!(err("").is_some());
    }

    #[test]
    fn zone_prefix() {
        assert_eq!(split_zone("0 9 * * *").ok().map(|(zone, _)| zone), Some(Tz::UTC));
        let (zone, body) = split_zone("CRON_TZ=Europe/Berlin 30 9 * * 1-5").expect("valid");
        assert_eq!((zone, body), (Tz::Europe__Berlin, "30 9 * * 1-5"));
        assert!(split_zone("CRON_TZ=Mars/Olympus 0 9 * * *")
            .is_err_and(|err| err.to_string().contains("unknown time zone \"Mars/Olympus\"")));
        assert!(split_zone("CRON_TZ= 0 9 * * *").is_err());
    }
}
