//! Poolkeeper's pure core.
//!
//! Everything here is a function of its arguments: no I/O, no clock, no environment.
//! `now` is always a field of the snapshot. The shell (`poolkeeper` crate) loads snapshots,
//! calls into this crate and carries out the returned decisions.

pub mod agent;
pub mod build;
mod instant;
pub mod lifecycle;
pub mod notifications;
pub mod prebuilds;
pub mod replay;
pub mod retention;
pub mod schedule;
mod serde_util;
pub mod tags;

/// The unit tests' one way to write an instant: `t("2025-06-02T09:00:00Z")`.
#[cfg(test)]
pub(crate) fn t(text: &str) -> chrono::DateTime<chrono::Utc> {
    text.parse().expect("test instant")
}

pub use replay::{parse_replay, run_replay, ReplayError, ReplayInput, ReplayOutput};
