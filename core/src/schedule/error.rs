//! Errors in schedules, worded for the user who wrote them.

/// An invalid schedule (rules §1). Callers that know where the text came from prefix the
/// JSON path of the field; errors located inside a set of schedules carry their own
/// relative path (`schedules[1].cron: ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The text is not a cron expression of the dialect.
    #[error("{0}")]
    Syntax(String),
    /// `CRON_TZ=` or a scheduling timezone that names no IANA zone (or none at all).
    #[error("{0}")]
    Zone(String),
    /// A well-formed schedule this use does not allow (an autostart that is not weekly, a
    /// window whose minute is not `*`, quiet hours that are not daily, a TTL out of range).
    #[error("{0}")]
    NotAllowed(String),
    /// Two prebuild windows share an hour of some day.
    #[error("overlaps schedules[{other}]: both contain {example}")]
    Overlap { other: usize, example: String },
    /// An error located at a field, e.g. `schedules[1].cron` or `autostart_schedule`.
    #[error("{path}: {error}")]
    At { path: String, error: Box<ScheduleError> },
}

impl ScheduleError {
    /// This error, located at `path`.
    pub fn at(self, path: impl Into<String>) -> ScheduleError {
        ScheduleError::At { path: path.into(), error: Box::new(self) }
    }
}
