//! Local wall-clock times to instants, with the DST rules of rules §1.

use chrono::{DateTime, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// The instant that local time `local` denotes in `zone` (rules §1 "DST"): the only one; in an
/// autumn fold the first occurrence; in a spring gap the first valid instant after the gap.
/// `None` only outside chrono's range of dates.
pub(crate) fn resolve_local(zone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&local).earliest() {
        Some(at) => Some(at.with_timezone(&Utc)),
        None => gap_end(zone, local),
    }
}

/// The first instant whose local time is later than `local`, a time inside a gap: the end of
/// the gap. Found by bisection on whole seconds (transitions fall on whole seconds).
fn gap_end(zone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    // UTC offsets lie within −12 h … +14 h, so 26 h either side brackets the gap.
    let reach = TimeDelta::hours(26);
    let as_utc = local.and_utc();
    let mut before = as_utc.checked_sub_signed(reach)?.timestamp();
    let mut after = as_utc.checked_add_signed(reach)?.timestamp();
    while after - before > 1 {
        let mid = before + (after - before) / 2;
        if local_at(zone, mid)? > local {
            after = mid;
        } else {
            before = mid;
        }
    }
    DateTime::from_timestamp(after, 0)
}

fn local_at(zone: Tz, timestamp: i64) -> Option<NaiveDateTime> {
    local_in(zone, DateTime::from_timestamp(timestamp, 0)?)
}

/// The UTC offset of `zone` at `at`, in seconds.
pub(crate) fn offset_secs(zone: Tz, at: DateTime<Utc>) -> i32 {
    zone.offset_from_utc_datetime(&at.naive_utc()).fix().local_minus_utc()
}

/// The local wall time of `at` in `zone`; `None` when it falls outside chrono's range of
/// dates (an instant within a day of ±262143 years). chrono's `naive_local` panics there.
pub(crate) fn local_in(zone: Tz, at: DateTime<Utc>) -> Option<NaiveDateTime> {
    let offset = zone.offset_from_utc_datetime(&at.naive_utc()).fix();
    at.naive_utc().checked_add_offset(offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d).and_then(|date| date.and_hms_opt(h, mi, 0)).expect("date")
    }

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("RFC 3339")
    }

    #[test]
    fn spring_gap_resolves_to_the_end_of_the_gap() {
        // London, 2025-03-30: 01:00 GMT jumps to 02:00 BST at 01:00Z.
        let london = Tz::Europe__London;
        assert_eq!(
            resolve_local(london, local(2025, 3, 30, 1, 30)),
            Some(utc("2025-03-30T01:00:00Z"))
        );
        assert_eq!(
            resolve_local(london, local(2025, 3, 30, 1, 0)),
            Some(utc("2025-03-30T01:00:00Z"))
        );
        assert_eq!(
            resolve_local(london, local(2025, 3, 30, 2, 0)),
            Some(utc("2025-03-30T01:00:00Z"))
        );
        assert_eq!(
            resolve_local(london, local(2025, 3, 30, 0, 59)),
            Some(utc("2025-03-30T00:59:00Z"))
        );
        // New York, 2025-03-09: 02:00 EST jumps to 03:00 EDT at 07:00Z.
        let new_york = Tz::America__New_York;
        assert_eq!(
            resolve_local(new_york, local(2025, 3, 9, 2, 30)),
            Some(utc("2025-03-09T07:00:00Z"))
        );
    }

    #[test]
    fn autumn_fold_resolves_to_the_first_occurrence() {
        // London, 2025-10-26: 01:00–02:00 happens twice (BST, then GMT).
        let london = Tz::Europe__London;
        assert_eq!(
            resolve_local(london, local(2025, 10, 26, 1, 30)),
            Some(utc("2025-10-26T00:30:00Z"))
        );
        let new_york = Tz::America__New_York;
        assert_eq!(
            resolve_local(new_york, local(2025, 11, 2, 1, 30)),
            Some(utc("2025-11-02T05:30:00Z"))
        );
    }

    #[test]
    fn a_gap_at_midnight() {
        // Santiago, 2024-09-08: 00:00 −04 jumps to 01:00 −03 at 04:00Z.
        let santiago = Tz::America__Santiago;
        assert_eq!(
            resolve_local(santiago, local(2024, 9, 8, 0, 0)),
            Some(utc("2024-09-08T04:00:00Z"))
        );
    }
}
