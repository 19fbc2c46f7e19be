//! Prebuild schedule windows (rules §1 "Prebuild schedule windows", rules §4 "Desired").
//!
//! A window is not a trigger: it contains instant `t` iff `t`'s local month, day (OR rule) and
//! hour, in the preset's `scheduling_timezone`, are in its fields, so `* 9-18 * * 1-5` covers
//! 09:00:00 ≤ local < 19:00:00 on Monday–Friday exactly.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Timelike, Utc, Weekday};
use chrono_tz::Tz;

use super::cron_expr::{parse_zone, CronFields};
use super::local_time::{local_in, offset_secs};
use super::ScheduleError;
use crate::instant::{duration, plus_secs};

/// How far `next_edge_after` looks. Weekly windows change within 8 days; this also finds the
/// edges of month and day-of-month windows up to a year ahead. Beyond it, `None`: the plan is
/// recomputed every cycle, so a more distant edge is found as it approaches.
pub const EDGE_HORIZON_DAYS: i64 = 400;

/// The longest lead time honoured: a longer one is read as this (every window of a valid set
/// opens within it, so nothing visible is lost).
const LEAD_HORIZON_SECS: u64 = EDGE_HORIZON_DAYS as u64 * 86_400;

/// A validated set of prebuild schedule windows in one zone (rules §1, §4).
#[derive(Debug, Clone, PartialEq)]
pub struct PrebuildWindows {
    zone: Tz,
    windows: Vec<CronFields>,
}

impl PrebuildWindows {
    /// Validates a preset's schedules: zone known and non-empty, minute `*`, no two windows
    /// overlapping. The error names the offending field relative to the preset
    /// (`scheduling_timezone: ...`, `schedules[2].cron: ...`).
    pub fn validate<'a>(
        timezone: &str,
        crons: impl IntoIterator<Item = &'a str>,
    ) -> Result<PrebuildWindows, ScheduleError> {
        let zone = if timezone.trim().is_empty() {
            Err(ScheduleError::Zone("empty: prebuild schedules need a time zone".to_owned()))
        } else {
            parse_zone(timezone)
        }
        .map_err(|err| err.at("scheduling_timezone"))?;
        let mut windows: Vec<CronFields> = Vec::new();
        for (index, text) in crons.into_iter().enumerate() {
            let at = |err: ScheduleError| err.at(format!("schedules[{index}].cron"));
            let window = parse_window(text).map_err(at)?;
            for (other, earlier) in windows.iter().enumerate() {
                if let Some(example) = overlap(earlier, &window) {
                    return Err(at(ScheduleError::Overlap { other, example }));
                }
            }
            windows.push(window);
        }
        Ok(PrebuildWindows { zone, windows })
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// Number of windows.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Index of the window open at `t` with `lead_secs` of pre-warming (rules §4): a window is
    /// open iff it contains some instant of `[t, t + lead_secs]`, and the first window in the
    /// order given that is open so wins. A window opens early but still closes on time, so
    /// pre-warming never shrinks the pool before the window ends.
    pub fn first_open(&self, t: DateTime<Utc>, lead_secs: u64) -> Option<usize> {
        let end =
            plus_secs(t, lead_secs.min(LEAD_HORIZON_SECS)).unwrap_or(DateTime::<Utc>::MAX_UTC);
        // Walk the instants in [t, end] where the window open on time changes, keeping the
        // smallest index seen (windows never overlap: one is open at a time, or none).
        let mut state = self.open_at_local(self.local(t)?);
        let mut first = state;
        let mut at = t;
        while first != Some(0) {
            match self.next_candidate(at, state) {
                Some(next) if next <= end => at = next,
                _ => break,
            }
            let Some(local) = self.local(at) else { break };
            state = self.open_at_local(local);
            first = match (first, state) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        first
    }

    /// The first instant strictly after `t` at which `first_open(_, lead_secs)` differs from
    /// its value at `t`; `None` when nothing changes within `EDGE_HORIZON_DAYS`.
    ///
    /// It changes only where a window's on-time membership does (a window closes on time) or
    /// where the membership of the instant `lead_secs` later does (a window opens early); each
    /// such candidate is checked, so an edge that changes nothing visible is skipped.
    pub fn next_edge_after(&self, t: DateTime<Utc>, lead_secs: u64) -> Option<DateTime<Utc>> {
        if self.windows.is_empty() {
            return None;
        }
        let lead_secs = lead_secs.min(LEAD_HORIZON_SECS);
        let state = self.first_open(t, lead_secs);
        let horizon = t.checked_add_signed(TimeDelta::days(EDGE_HORIZON_DAYS))?;
        let mut at = t;
        loop {
            let on_time = self.next_shifted_edge_after(at, 0);
            let early = match lead_secs {
                0 => None,
                lead => self.next_shifted_edge_after(at, lead),
            };
            at = on_time.into_iter().chain(early).min()?;
            if at > horizon {
                return None;
            }
            if self.first_open(at, lead_secs) != state {
                return Some(at);
            }
        }
    }

    /// The earliest instant strictly after `t` at which membership of `t + lead_secs` changes.
    ///
    /// Membership can only change where the local hour does: at a local hour boundary or at a
    /// UTC offset transition (zones with 30- and 45-minute offsets have their boundaries at
    /// :30 or :45 UTC). The walk jumps from one such instant to the next where membership
    /// would differ, skipping whole constant days, and bisects for offset transitions.
    fn next_shifted_edge_after(&self, t: DateTime<Utc>, lead_secs: u64) -> Option<DateTime<Utc>> {
        if self.windows.is_empty() {
            return None;
        }
        let lead = duration(lead_secs)?;
        let start = t.checked_add_signed(lead)?;
        let horizon = start.checked_add_signed(TimeDelta::days(EDGE_HORIZON_DAYS))?;
        // Windows never overlap, so "which window is open" is the whole membership state.
        let state = self.open_at_local(self.local(start)?);
        let mut at = start;
        loop {
            at = self.next_candidate(at, state)?;
            if at > horizon {
                return None;
            }
            if self.open_at_local(self.local(at)?) != state {
                return at.checked_sub_signed(lead);
            }
        }
    }

    /// Local wall time of `at`; `None` at the very edge of the representable range, where
    /// adding the zone's offset would overflow (a hostile `now` must not panic the core).
    fn local(&self, at: DateTime<Utc>) -> Option<NaiveDateTime> {
        local_in(self.zone, at)
    }

    fn open_at_local(&self, local: NaiveDateTime) -> Option<usize> {
        let (date, hour) = (local.date(), local.hour());
        self.windows.iter().position(|w| w.has_hour(hour) && w.matches_date(date))
    }

    /// The next instant after `at` where the open window may differ from `state`: the first
    /// later local hour boundary of the same local day whose window differs, else the next
    /// local midnight; or an offset transition before that.
    fn next_candidate(&self, at: DateTime<Utc>, state: Option<usize>) -> Option<DateTime<Utc>> {
        let offset = offset_secs(self.zone, at);
        let local = self.local(at)?;
        let date = local.date();
        let open_at_hour =
            |hour: u32| self.windows.iter().position(|w| w.has_hour(hour) && w.matches_date(date));
        let boundary = match (local.hour() + 1..24).find(|&hour| open_at_hour(hour) != state) {
            Some(hour) => date.and_hms_opt(hour, 0, 0)?,
            None => date.succ_opt()?.and_hms_opt(0, 0, 0)?,
        };
        let candidate =
            boundary.checked_sub_signed(TimeDelta::seconds(i64::from(offset)))?.and_utc();
        if offset_secs(self.zone, candidate) == offset {
            return Some(candidate);
        }
        // The offset changes in (at, candidate]: the first instant with the new offset.
        let (mut same, mut changed) = (at.timestamp(), candidate.timestamp());
        while changed - same > 1 {
            let mid = same + (changed - same) / 2;
            let mid_at = DateTime::from_timestamp(mid, 0)?;
            if offset_secs(self.zone, mid_at) == offset {
                same = mid;
            } else {
                changed = mid;
            }
        }
        DateTime::from_timestamp(changed, 0)
    }
}

/// One window: the five fields with minute `*`, no `CRON_TZ=` (the zone is the preset's).
fn parse_window(text: &str) -> Result<CronFields, ScheduleError> {
    if text.trim_start().starts_with("CRON_TZ=") {
        return Err(ScheduleError::NotAllowed(
            "a window takes its zone from scheduling_timezone; remove the CRON_TZ= prefix"
                .to_owned(),
        ));
    }
    let fields = CronFields::parse(text)?;
    if !fields.minute_star {
        return Err(ScheduleError::NotAllowed(
            "the minute field must be `*`: a window covers whole hours".to_owned(),
        ));
    }
    Ok(fields)
}

/// Whether some hour of some day is in both windows, and an example if so. Every (month,
/// day of month, weekday) combination occurs in the Gregorian calendar (29 February on every
/// weekday within 28 years), so checking all of them, with the OR rule, is exact.
fn overlap(a: &CronFields, b: &CronFields) -> Option<String> {
    const WEEKDAYS: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];
    let hours = a.hours & b.hours;
    if hours == 0 {
        return None;
    }
    let hour = hours.trailing_zeros();
    for month in (1..=12).filter(|&m| a.has_month(m) && b.has_month(m)) {
        for day in 1..=longest_month(month) {
            for weekday in WEEKDAYS {
                if a.day_rule(day, weekday) && b.day_rule(day, weekday) {
                    let month_name = NaiveDate::from_ymd_opt(2024, month, 1)
                        .map(|d| d.format("%B").to_string())
                        .unwrap_or_default();
                    return Some(format!(
                        "{hour:02}:00-{:02}:00 on {weekday:?} {month_name} {day}",
                        hour + 1
                    ));
                }
            }
        }
    }
    None
}

/// Days in `month` of a leap year.
fn longest_month(month: u32) -> u32 {
    match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::t;

    fn windows(zone: &str, crons: &[&str]) -> PrebuildWindows {
        PrebuildWindows::validate(zone, crons.iter().copied())
            .unwrap_or_else(|err| panic!("{crons:?}: {err}"))
    }

    fn invalid(zone: &str, crons: &[&str]) -> String {
        match PrebuildWindows::validate(zone, crons.iter().copied()) {
            Ok(_) => panic!("{crons:?} should be invalid"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn business_hours_edges_are_exact() {
        // 2025-06-02 is a Monday; UTC.
        let w = windows("UTC", &["* 9-18 * * 1-5"]);
        assert_eq!(w.first_open(t("2025-06-02T08:59:59Z"), 0), None);
        assert_eq!(w.first_open(t("2025-06-02T09:00:00Z"), 0), Some(0));
        assert_eq!(w.first_open(t("2025-06-02T18:59:59Z"), 0), Some(0));
        assert_eq!(w.first_open(t("2025-06-02T19:00:00Z"), 0), None);
        // Saturday is outside.
        assert_eq!(w.first_open(t("2025-06-07T12:00:00Z"), 0), None);
    }

    #[test]
    fn membership_in_the_preset_zone() {
        // Berlin is UTC+2 in June: 09:00 local = 07:00Z.
        let w = windows("Europe/Berlin", &["* 9-18 * * 1-5"]);
        assert_eq!(w.first_open(t("2025-06-02T06:59:59Z"), 0), None);
        assert_eq!(w.first_open(t("2025-06-02T07:00:00Z"), 0), Some(0));
        assert_eq!(w.first_open(t("2025-06-02T16:59:59Z"), 0), Some(0));
        assert_eq!(w.first_open(t("2025-06-02T17:00:00Z"), 0), None);
    }

    #[test]
    fn first_matching_window_and_lead() {
        let w = windows("UTC", &["* 9-11 * * *", "* 12-13 * * *"]);
        assert_eq!(w.first_open(t("2025-06-02T12:30:00Z"), 0), Some(1));
        // Ten minutes of lead: open at 08:50.
        assert_eq!(w.first_open(t("2025-06-02T08:49:59Z"), 600), None);
        assert_eq!(w.first_open(t("2025-06-02T08:50:00Z"), 600), Some(0));
        // Open early, but closed on time: 13:50 is still inside 12-13, 14:00 is outside.
        assert_eq!(w.first_open(t("2025-06-02T13:50:00Z"), 600), Some(1));
        assert_eq!(w.first_open(t("2025-06-02T14:00:00Z"), 600), None);
    }

    /// Issue 18 item 5 (rules §4): a window is open at `now` iff it contains some instant of
    /// `[now, now + lead]`; the first schedule in the order given that is open so wins.
    #[test]
    fn lead_opens_each_window_early_and_the_first_in_order_wins() {
        // schedules[0] opens at noon; schedules[1] is open until noon. From 11:50 both count
        // as open, and the first in order wins.
        let w = windows("UTC", &["* 12-13 * * *", "* 9-11 * * *"]);
        assert_eq!(w.first_open(t("2025-06-02T11:49:59Z"), 600), Some(1));
        assert_eq!(w.first_open(t("2025-06-02T11:50:00Z"), 600), Some(0));
        assert_eq!(
            w.next_edge_after(t("2025-06-02T11:00:00Z"), 600),
            Some(t("2025-06-02T11:50:00Z"))
        );
        assert_eq!(
            w.next_edge_after(t("2025-06-02T11:50:00Z"), 600),
            Some(t("2025-06-02T14:00:00Z"))
        );
        // A lead longer than the window: 09:00-10:00 counts as open from 06:00 to 10:00.
        let w = windows("UTC", &["* 9 * * *"]);
        let lead = 3 * 3600;
        assert_eq!(w.first_open(t("2025-06-02T05:59:59Z"), lead), None);
        assert_eq!(w.first_open(t("2025-06-02T06:00:00Z"), lead), Some(0));
        assert_eq!(w.first_open(t("2025-06-02T07:15:00Z"), lead), Some(0));
        assert_eq!(w.first_open(t("2025-06-02T09:59:59Z"), lead), Some(0));
        assert_eq!(w.first_open(t("2025-06-02T10:00:00Z"), lead), None);
        assert_eq!(
            w.next_edge_after(t("2025-06-02T05:00:00Z"), lead),
            Some(t("2025-06-02T06:00:00Z"))
        );
        assert_eq!(
            w.next_edge_after(t("2025-06-02T06:00:00Z"), lead),
            Some(t("2025-06-02T10:00:00Z"))
        );
        // Opened a day early, a daily window never closes: no edge.
        assert_eq!(w.first_open(t("2025-06-02T10:00:00Z"), 86_400), Some(0));
        assert_eq!(w.next_edge_after(t("2025-06-02T10:00:00Z"), 86_400), None);
        // Nor does a lead beyond every representable instant panic.
        assert_eq!(w.first_open(t("2025-06-02T10:00:00Z"), u64::MAX), Some(0));
        let _ = w.next_edge_after(t("2025-06-02T10:00:00Z"), u64::MAX);
    }

    #[test]
    fn next_edges() {
        let w = windows("UTC", &["* 9-18 * * 1-5"]);
        assert_eq!(
            w.next_edge_after(t("2025-06-02T08:00:00Z"), 0),
            Some(t("2025-06-02T09:00:00Z"))
        );
        assert_eq!(
            w.next_edge_after(t("2025-06-02T09:00:00Z"), 0),
            Some(t("2025-06-02T19:00:00Z"))
        );
        // Friday evening → Monday morning.
        assert_eq!(
            w.next_edge_after(t("2025-06-06T19:00:00Z"), 0),
            Some(t("2025-06-09T09:00:00Z"))
        );
        // With lead, edges come early.
        assert_eq!(
            w.next_edge_after(t("2025-06-02T08:00:00Z"), 900),
            Some(t("2025-06-02T08:45:00Z"))
        );
        // Adjacent windows: the switch from one to the other is an edge.
        let w = windows("UTC", &["* 9-11 * * *", "* 12-13 * * *"]);
        assert_eq!(
            w.next_edge_after(t("2025-06-02T10:00:00Z"), 0),
            Some(t("2025-06-02T12:00:00Z"))
        );
        // Always open: no edge.
        assert_eq!(
            windows("UTC", &["* * * * *"]).next_edge_after(t("2025-06-02T10:00:00Z"), 0),
            None
        );
        // December only, asked in June.
        let w = windows("UTC", &["* * * 12 *"]);
        assert_eq!(
            w.next_edge_after(t("2025-06-02T10:00:00Z"), 0),
            Some(t("2025-12-01T00:00:00Z"))
        );
    }

    #[test]
    fn edges_in_half_hour_zones_and_across_dst() {
        // Kolkata is +05:30: 09:00 local = 03:30Z.
        let w = windows("Asia/Kolkata", &["* 9-18 * * *"]);
        assert_eq!(
            w.next_edge_after(t("2025-06-02T00:00:00Z"), 0),
            Some(t("2025-06-02T03:30:00Z"))
        );
        assert_eq!(
            w.next_edge_after(t("2025-06-02T03:30:00Z"), 0),
            Some(t("2025-06-02T13:30:00Z"))
        );
        // London spring forward 2025-03-30 at 01:00Z: local 00:59 GMT → 02:00 BST. A window
        // on hour 1 never opens that day; one on hour 2 opens at the jump.
        let w = windows("Europe/London", &["* 2 * * *"]);
        assert_eq!(
            w.next_edge_after(t("2025-03-30T00:00:00Z"), 0),
            Some(t("2025-03-30T01:00:00Z"))
        );
        assert_eq!(
            w.next_edge_after(t("2025-03-30T01:00:00Z"), 0),
            Some(t("2025-03-30T02:00:00Z"))
        );
        // Autumn 2025-10-26: hour 1 happens twice (00:00Z–02:00Z), one continuous window.
        let w = windows("Europe/London", &["* 1 * * *"]);
        assert_eq!(w.first_open(t("2025-10-26T00:30:00Z"), 0), Some(0));
        assert_eq!(w.first_open(t("2025-10-26T01:30:00Z"), 0), Some(0));
        assert_eq!(
            w.next_edge_after(t("2025-10-25T23:30:00Z"), 0),
            Some(t("2025-10-26T00:00:00Z"))
        );
        assert_eq!(
            w.next_edge_after(t("2025-10-26T00:00:00Z"), 0),
            Some(t("2025-10-26T02:00:00Z"))
        );
    }

    #[test]
    fn overlapping_windows_are_rejected() {
        let err = invalid("UTC", &["* 9-18 * * 1-5", "* 18-20 * * *"]);
        assert!(err.starts_with("schedules[1].cron: overlaps schedules[0]"), "{err}");
        // Same hours, disjoint days: fine.
        windows("UTC", &["* 9-18 * * 1-5", "* 9-18 * * 6,0"]);
        // Disjoint hours: fine.
        windows("UTC", &["* 0-8 * * *", "* 9-23 * * *"]);
        // The OR rule: "the 1st or a Sunday" overlaps Mondays (a Monday the 1st); read as
        // "a Sunday the 1st" (AND) it would not.
        let err = invalid("UTC", &["* 9 * * 1", "* 9 1 * 0"]);
        assert!(err.contains("overlaps schedules[0]: both contain 09:00-10:00 on Mon"), "{err}");
        windows("UTC", &["* 9 * * 1", "* 9 * * 0"]);
        // Different months never overlap.
        windows("UTC", &["* * * 1-6 *", "* * * 7-12 *"]);
        // 29 February is a day like any other.
        let err = invalid("UTC", &["* 9 29 2 *", "* 9 * feb 3"]);
        assert!(err.contains("February 29"), "{err}");
    }

    #[test]
    fn invalid_windows_say_where_and_why() {
        let err = invalid("Mars/Olympus", &["* 9 * * *"]);
        assert!(err.starts_with("scheduling_timezone: unknown time zone"), "{err}");
        let err = invalid("", &["* 9 * * *"]);
        assert!(err.starts_with("scheduling_timezone: empty"), "{err}");
        let err = invalid("UTC", &["* 9 * * *", "0 10 * * *"]);
        assert!(err.starts_with("schedules[1].cron: the minute field must be `*`"), "{err}");
        let err = invalid("UTC", &["* 25 * * *"]);
        assert!(err.starts_with("schedules[0].cron: hour field"), "{err}");
        let err = invalid("UTC", &["CRON_TZ=UTC * 9 * * *"]);
        assert!(err.contains("remove the CRON_TZ= prefix"), "{err}");
        assert!(PrebuildWindows::validate("UTC", []).is_ok_and(|w| w.is_empty()));
    }
}
