//! Time and schedules (rules §1) and deadlines (rules §3).
//!
//! - `cron_expr`: the cron dialect's fields (on the `cron` crate; day of week and the OR rule
//!   evaluated here, see its notes);
//! - `cron_schedule`: a parsed schedule with its zone and its firing instants;
//! - `local_time`: local wall-clock times to instants under the DST rules;
//! - `autostart`: weekly autostart schedules and `next_autostart`;
//! - `window`: prebuild schedule windows;
//! - `deadline`, `activity`: rules §3.
//!
//! Everything is a function of its arguments: instants come in, never from a clock.

mod activity;
mod autostart;
mod cron_expr;
mod cron_schedule;
mod deadline;
mod error;
mod inputs;
mod local_time;
mod weekday;
mod window;

pub use activity::{bump_activity, bumped_deadline, ActivityInputs};
pub use autostart::{next_autostart, parse_autostart, AUTOSTART_HORIZON_DAYS};
pub use cron_schedule::CronSchedule;
pub use deadline::{
    complete_build, compute_deadlines, effective_ttl, parse_quiet_hours, DeadlineInputs, Deadlines,
    DEFAULT_QUIET_HOURS,
};
pub use error::ScheduleError;
pub use inputs::{
    ActivityBuild, ActivityReport, ActivityResult, ActivityTemplate, BuildCompletion,
    BuildCompletionResult, CompletionTemplate,
};
pub use weekday::{DayName, WeekdaySet};
pub use window::{PrebuildWindows, EDGE_HORIZON_DAYS};
