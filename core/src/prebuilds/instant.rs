//! Saturating instant arithmetic: snapshot durations are unbounded `u64` seconds, and a plan
//! must never panic on a far-fetched value.

use chrono::{DateTime, TimeDelta, Utc};

/// `t + secs`, clamped to the last representable instant.
pub(crate) fn plus_secs(t: DateTime<Utc>, secs: u64) -> DateTime<Utc> {
    i64::try_from(secs)
        .ok()
        .and_then(TimeDelta::try_seconds)
        .and_then(|delta| t.checked_add_signed(delta))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `t − secs`, clamped to the first representable instant.
pub(crate) fn minus_secs(t: DateTime<Utc>, secs: u64) -> DateTime<Utc> {
    i64::try_from(secs)
        .ok()
        .and_then(TimeDelta::try_seconds)
        .and_then(|delta| t.checked_sub_signed(delta))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The first whole second after a strict boundary `t`: a rule that needs `now > t` (or stays
/// in force while `now ≤ t`) is first seen changed here. Saturates at the last instant.
pub(crate) fn just_after(t: DateTime<Utc>) -> DateTime<Utc> {
    plus_secs(t, 1)
}

/// `a × b` seconds, saturating.
pub(crate) fn times_secs(count: usize, secs: u64) -> u64 {
    u64::try_from(count).unwrap_or(u64::MAX).saturating_mul(secs)
}

/// A row count as a state counter.
pub(crate) fn counter(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        let t = DateTime::<Utc>::MAX_UTC;
        assert_eq!(plus_secs(t, 1), DateTime::<Utc>::MAX_UTC);
        assert_eq!(plus_secs(DateTime::<Utc>::UNIX_EPOCH, u64::MAX), DateTime::<Utc>::MAX_UTC);
        assert_eq!(minus_secs(DateTime::<Utc>::UNIX_EPOCH, u64::MAX), DateTime::<Utc>::MIN_UTC);
        assert_eq!(times_secs(usize::MAX, u64::MAX), u64::MAX);
        assert_eq!(counter(usize::MAX), u32::MAX);
    }

    #[test]
    fn just_after_is_one_second_later() {
        let t = DateTime::<Utc>::UNIX_EPOCH;
        assert_eq!(just_after(t), plus_secs(t, 1));
        assert_eq!(minus_secs(plus_secs(t, 90), 90), t);
    }
}
