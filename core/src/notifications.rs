//! The rules of notification delivery (rules §5): when a failed send is tried again, when a
//! message is given up, and which finished builds tell their owner. The shell sends and
//! records; every choice it makes is one of these functions.

use std::time::Duration;

use crate::build::Transition;

/// What one send by one method came to, and what a message as a whole came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Sent,
    /// Worth another try (a timeout, a refused connection, a 5xx, a 4xx SMTP reply).
    TemporaryFailure,
    /// The method says trying again cannot help (a 4xx webhook reply, a 5xx SMTP reply), or
    /// the attempts ran out.
    PermanentFailure,
    /// The recipient switched this kind off.
    Inhibited,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::TemporaryFailure => "temporary_failure",
            Self::PermanentFailure => "permanent_failure",
            Self::Inhibited => "inhibited",
        }
    }

    /// A message in this state is never sent again.
    pub fn is_final(self) -> bool {
        self != Self::TemporaryFailure
    }
}

/// How long to wait before attempt `attempt + 1` after attempt `attempt` (1-based) failed:
/// `base` doubling per attempt, capped at `cap`, then scaled by `0.5 + jitter / 2` so that
/// messages that failed together (a receiver that was down) do not all come back at once,
/// yet none comes back sooner than half the nominal delay. `jitter` is a draw from `[0, 1)`;
/// values outside are clamped.
pub fn retry_delay(attempt: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    let nominal = base.saturating_mul(1u32 << doublings).min(cap);
    let jitter = if jitter.is_finite() { jitter.clamp(0.0, 1.0) } else { 0.0 };
    nominal.mul_f64(0.5 + jitter / 2.0)
}

/// The state of a message after attempt `attempt` (1-based) of at most `max_attempts`, from
/// the outcome of every method it is meant for (methods that succeeded on an earlier attempt
/// count as `Sent`). A method still failing temporarily is retried while attempts remain;
/// after that, or when any method failed for good, the message has failed for good.
pub fn message_outcome(methods: &[Outcome], attempt: u32, max_attempts: u32) -> Outcome {
    if methods.is_empty() {
        // No method reaches the recipient: nothing will change that by waiting.
        return Outcome::PermanentFailure;
    }
    if methods.contains(&Outcome::Inhibited) {
        return Outcome::Inhibited;
    }
    if methods.contains(&Outcome::TemporaryFailure) {
        return if attempt >= max_attempts {
            Outcome::PermanentFailure
        } else {
            Outcome::TemporaryFailure
        };
    }
    if methods.contains(&Outcome::PermanentFailure) {
        return Outcome::PermanentFailure;
    }
    Outcome::Sent
}

/// A notice to a workspace's owner about a build that finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildNotice {
    /// The lifecycle's auto-delete of a dormant workspace went through.
    WorkspaceAutodeleted,
    /// An autostart or autostop build failed: the workspace is not in the state its
    /// schedule promised.
    AutobuildFailed,
}

/// Which notice, if any, a finished build of `transition` with build reason `reason`
/// (`autostart`, `initiator`, ...) earns its owner (rules §5). Builds a person asked for
/// are not notified: that person watches them.
pub fn build_notice(transition: Transition, reason: &str, succeeded: bool) -> Option<BuildNotice> {
    match (transition, reason, succeeded) {
        (Transition::Delete, "autodelete", true) => Some(BuildNotice::WorkspaceAutodeleted),
        (Transition::Start, "autostart", false) | (Transition::Stop, "autostop", false) => {
            Some(BuildNotice::AutobuildFailed)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn retry_delay_doubles_caps_and_jitters_within_half_to_full() {
        let base = 10 * S;
        let cap = 300 * S;
        assert_eq!(retry_delay(1, base, cap, 1.0), 10 * S);
        assert_eq!(retry_delay(2, base, cap, 1.0), 20 * S);
        assert_eq!(retry_delay(3, base, cap, 1.0), 40 * S);
        assert_eq!(retry_delay(6, base, cap, 1.0), 300 * S, "capped");
        assert_eq!(retry_delay(1, base, cap, 0.0), 5 * S, "at least half");
        assert_eq!(retry_delay(2, base, cap, 0.5), 15 * S);
        assert_eq!(retry_delay(u32::MAX, base, cap, 1.0), 300 * S, "no overflow");
        assert_eq!(retry_delay(0, base, cap, 1.0), 10 * S, "attempt 0 reads as the first");
        assert_eq!(retry_delay(1, base, cap, 7.0), 10 * S, "jitter clamped");
        assert_eq!(retry_delay(1, base, cap, f64::NAN), 5 * S, "NaN jitter is none");
        for attempt in 1..40 {
            for jitter in [0.0, 0.25, 0.5, 0.999] {
                let delay = retry_delay(attempt, base, cap, jitter);
                assert!(delay >= base / 2 && delay <= cap, "{attempt} {jitter}: {delay:?}");
            }
        }
    }

    #[test]
    fn message_outcome_retries_while_attempts_remain() {
        use Outcome::*;
        let check = |methods: &[Outcome], attempt, expected| {
            assert_eq!(message_outcome(methods, attempt, 3), expected, "{methods:?} #{attempt}");
        };
        check(&[Sent], 1, Sent);
        check(&[Sent, Sent], 1, Sent);
        check(&[TemporaryFailure], 1, TemporaryFailure);
        check(&[TemporaryFailure], 2, TemporaryFailure);
        check(&[TemporaryFailure], 3, PermanentFailure);
        check(&[Sent, TemporaryFailure], 1, TemporaryFailure);
        check(&[PermanentFailure, TemporaryFailure], 1, TemporaryFailure);
        check(&[PermanentFailure, Sent], 1, PermanentFailure);
        check(&[PermanentFailure], 1, PermanentFailure);
        check(&[Inhibited], 1, Inhibited);
        check(&[], 1, PermanentFailure);
    }

    #[test]
    fn only_automatic_builds_notify_their_owner() {
        use Transition::*;
        assert_eq!(
            build_notice(Delete, "autodelete", true),
            Some(BuildNotice::WorkspaceAutodeleted)
        );
        assert_eq!(build_notice(Delete, "autodelete", false), None);
        assert_eq!(build_notice(Start, "autostart", false), Some(BuildNotice::AutobuildFailed));
        assert_eq!(build_notice(Stop, "autostop", false), Some(BuildNotice::AutobuildFailed));
        assert_eq!(build_notice(Start, "autostart", true), None);
        assert_eq!(build_notice(Start, "initiator", false), None);
        assert_eq!(build_notice(Stop, "failedstop", false), None);
        assert_eq!(build_notice(Delete, "prebuild", true), None);
        assert_eq!(build_notice(Delete, "initiator", true), None);
    }
}
