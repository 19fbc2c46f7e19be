//! Instant arithmetic on snapshot durations. Durations are unbounded `u64` seconds and
//! instants span chrono's whole range (±262143 years), so every sum is checked: the one way
//! in the core to add (or subtract) seconds, and callers say what "out of range" means for
//! their rule.

use chrono::{DateTime, TimeDelta, Utc};

/// `secs` as a duration; `None` when chrono cannot represent it.
pub(crate) fn duration(secs: u64) -> Option<TimeDelta> {
    i64::try_from(secs).ok().and_then(TimeDelta::try_seconds)
}

/// `at + secs`; `None` past the last representable instant.
pub(crate) fn plus_secs(at: DateTime<Utc>, secs: u64) -> Option<DateTime<Utc>> {
    duration(secs).and_then(|delta| at.checked_add_signed(delta))
}

/// `at − secs`; `None` before the first representable instant.
pub(crate) fn minus_secs(at: DateTime<Utc>, secs: u64) -> Option<DateTime<Utc>> {
    duration(secs).and_then(|delta| at.checked_sub_signed(delta))
}

/// `count × secs` seconds, saturating (an unrepresentable product then fails `plus_secs`).
pub(crate) fn times_secs(count: usize, secs: u64) -> u64 {
    u64::try_from(count).unwrap_or(u64::MAX).saturating_mul(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_out_of_range_are_none_not_panics() {
        let epoch = DateTime::<Utc>::UNIX_EPOCH;
        assert_eq!(plus_secs(DateTime::<Utc>::MAX_UTC, 1), None);
        assert_eq!(minus_secs(DateTime::<Utc>::MIN_UTC, 1), None);
        assert_eq!(plus_secs(epoch, u64::MAX), None);
        assert_eq!(minus_secs(epoch, u64::MAX), None);
        assert_eq!(plus_secs(epoch, i64::MAX as u64 / 1000 + 1), None);
        assert_eq!(plus_secs(epoch, 90).and_then(|at| minus_secs(at, 90)), Some(epoch));
        assert_eq!(times_secs(usize::MAX, u64::MAX), u64::MAX);
    }
}
