//! Time and schedules (SPEC §1) and deadlines (SPEC §3).
//!
//! INTERFACE CONTRACT (signatures used by lifecycle, prebuilds and the shell).

mod inputs;
mod weekday;

pub use inputs::{
    ActivityBuild, ActivityReport, ActivityResult, ActivityTemplate, BuildCompletion,
    BuildCompletionResult, CompletionTemplate,
};
pub use weekday::{DayName, WeekdaySet};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// An error in a schedule, worded for the user who wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(pub String);

/// A parsed five-field cron expression with an optional `CRON_TZ=` zone (SPEC §1).
#[derive(Debug, Clone, PartialEq)]
pub struct CronSchedule {
    zone: Tz,
}

impl CronSchedule {
    /// Parses the cron dialect of SPEC §1.
    pub fn parse(_text: &str) -> Result<CronSchedule, ScheduleError> {
        Err(ScheduleError("not implemented yet".into()))
    }

    /// The zone the schedule is evaluated in (UTC unless `CRON_TZ=` says otherwise).
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first firing instant strictly after `after`.
    pub fn next_after(&self, _after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        None
    }
}

/// Parses an autostart schedule: day-of-month and month must be `*` (weekly).
pub fn parse_autostart(text: &str) -> Result<CronSchedule, ScheduleError> {
    CronSchedule::parse(text)
}

/// SPEC §1 `next_autostart`: first firing strictly after `after` whose local weekday (in the
/// schedule's zone) is allowed; none within 14 days → `None`.
pub fn next_autostart(
    _after: DateTime<Utc>,
    _schedule: &CronSchedule,
    _allowed_days: WeekdaySet,
) -> Option<DateTime<Utc>> {
    None
}

/// A validated set of prebuild schedule windows in one zone (SPEC §1, §4).
#[derive(Debug, Clone, PartialEq)]
pub struct PrebuildWindows {
    zone: Tz,
}

impl PrebuildWindows {
    /// Validates a preset's schedules: zone known and non-empty, minute `*`, no two windows
    /// overlapping. The error names the offending schedule index.
    pub fn validate<'a>(
        _timezone: &str,
        _crons: impl IntoIterator<Item = &'a str>,
    ) -> Result<PrebuildWindows, ScheduleError> {
        Err(ScheduleError("not implemented yet".into()))
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// Index of the first window that contains `t`, counting each window as open `lead_secs`
    /// early.
    pub fn first_open(&self, _t: DateTime<Utc>, _lead_secs: u64) -> Option<usize> {
        None
    }

    /// The earliest instant strictly after `t` at which some window (shifted by `lead_secs`)
    /// opens or closes.
    pub fn next_edge_after(&self, _t: DateTime<Utc>, _lead_secs: u64) -> Option<DateTime<Utc>> {
        None
    }
}

/// SPEC §3: deadline, max deadline and next start of a start build that just succeeded.
pub fn complete_build(input: &BuildCompletion) -> BuildCompletionResult {
    BuildCompletionResult {
        id: input.id.clone(),
        deadline: None,
        max_deadline: None,
        next_start_at: None,
        error: None,
    }
}

/// SPEC §3 activity bump: the new deadline (unchanged when no bump applies).
pub fn bump_activity(input: &ActivityReport) -> ActivityResult {
    ActivityResult { id: input.id.clone(), deadline: input.build.deadline }
}
