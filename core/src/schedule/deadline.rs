//! Deadlines of a start build whose job just succeeded (rules §3).

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeDelta, Utc};

use super::local_time::{local_in, resolve_local};
use super::{
    next_autostart, parse_autostart, BuildCompletion, BuildCompletionResult, CronSchedule,
    ScheduleError, WeekdaySet,
};
use crate::instant::duration;

/// The quiet-hours schedule of a user who never set one (rules §3).
pub const DEFAULT_QUIET_HOURS: &str = "CRON_TZ=UTC 0 0 * * *";

/// Week 0 of "every N weeks" autostop requirements starts on this Monday, in the quiet-hours
/// zone (rules §3).
const WEEK_EPOCH: (i32, u32, u32) = (2023, 1, 2);

/// The plain inputs of rules §3's deadline computation, for callers without a replay entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeadlineInputs<'a> {
    /// `C`: when the start build's job succeeded.
    pub completed_at: DateTime<Utc>,
    pub is_prebuild: bool,
    /// 0 = the workspace has no TTL.
    pub workspace_ttl_secs: u64,
    /// `None` or empty = no autostart schedule.
    pub autostart_schedule: Option<&'a str>,
    /// `None` = no quiet hours (no max deadline); empty = `DEFAULT_QUIET_HOURS`.
    pub quiet_hours_schedule: Option<&'a str>,
    pub user_autostop_enabled: bool,
    pub default_ttl_secs: u64,
    /// Empty = no autostop requirement.
    pub autostop_requirement_days: WeekdaySet,
    /// Every N weeks; 0 is read as 1.
    pub autostop_requirement_weeks: u32,
    pub autostart_days: WeekdaySet,
}

/// The computed deadlines (all `None` for a prebuild).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Deadlines {
    pub deadline: Option<DateTime<Utc>>,
    pub max_deadline: Option<DateTime<Utc>>,
    pub next_start_at: Option<DateTime<Utc>>,
    /// Explanation of a fallback taken (quiet hours that do not parse, read as the default).
    pub note: Option<String>,
}

/// rules §3: deadline, max deadline and next start of a start build that just succeeded. A bad
/// schedule (or an out-of-range TTL) is an error naming the field.
pub fn compute_deadlines(inputs: &DeadlineInputs<'_>) -> Result<Deadlines, ScheduleError> {
    if inputs.is_prebuild {
        return Ok(Deadlines::default());
    }
    let autostart = match inputs.autostart_schedule.map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(parse_autostart(text).map_err(|err| err.at("autostart_schedule"))?),
    };
    // Quiet hours matter only for a max deadline, which needs a required day: otherwise they
    // are not read at all, so a bad one cannot cost the workspace its deadline.
    let (quiet_hours, note) = if inputs.autostop_requirement_days.is_empty() {
        (None, None)
    } else {
        match inputs.quiet_hours_schedule.map(quiet_hours_or_default) {
            None => (None, None),
            Some((schedule, note)) => (Some(schedule), note),
        }
    };
    let completed = inputs.completed_at;
    let ttl = effective_ttl(
        inputs.user_autostop_enabled,
        inputs.default_ttl_secs,
        inputs.workspace_ttl_secs,
    )?;

    let mut deadline = match ttl {
        Some(ttl) => Some(add(completed, ttl)?),
        None => None,
    };
    // Autostart crossing: a deadline past the next allowed firing `n` becomes `n + TTL`, as
    // if the workspace had been autostarted at `n`.
    if let (Some(current), Some(ttl), Some(schedule)) = (deadline, ttl, &autostart) {
        if let Some(n) = schedule.next_after(completed) {
            let allowed =
                schedule.local_weekday(n).is_some_and(|day| inputs.autostart_days.contains(day));
            if allowed && current > n {
                deadline = Some(add(n, ttl)?);
            }
        }
    }
    let max_deadline = match &quiet_hours {
        Some(quiet) => max_deadline(
            completed,
            quiet,
            inputs.autostop_requirement_days,
            inputs.autostop_requirement_weeks,
        ),
        None => None,
    };
    if let Some(max) = max_deadline {
        if deadline.is_none_or(|current| max < current) {
            deadline = Some(max);
        }
    }
    let next_start_at =
        autostart.as_ref().and_then(|s| next_autostart(completed, s, inputs.autostart_days));
    Ok(Deadlines { deadline, max_deadline, next_start_at, note })
}

/// rules §3 for a replay entry: `compute_deadlines` with the error in the `error` field.
pub fn complete_build(input: &BuildCompletion) -> BuildCompletionResult {
    let template = &input.template;
    let inputs = DeadlineInputs {
        completed_at: input.completed_at,
        is_prebuild: input.is_prebuild,
        workspace_ttl_secs: input.workspace_ttl_secs,
        autostart_schedule: input.autostart_schedule.as_deref(),
        quiet_hours_schedule: input.owner_quiet_hours_schedule.as_deref(),
        user_autostop_enabled: template.user_autostop_enabled,
        default_ttl_secs: template.default_ttl_secs,
        autostop_requirement_days: WeekdaySet::from_days(&template.autostop_requirement_days),
        autostop_requirement_weeks: template.autostop_requirement_weeks,
        autostart_days: WeekdaySet::from_days(&template.autostart_days),
    };
    let (deadlines, error) = match compute_deadlines(&inputs) {
        Ok(deadlines) => (deadlines, None),
        Err(err) => (Deadlines::default(), Some(err.to_string())),
    };
    BuildCompletionResult {
        id: input.id.clone(),
        deadline: deadlines.deadline,
        max_deadline: deadlines.max_deadline,
        next_start_at: deadlines.next_start_at,
        error,
        note: deadlines.note,
    }
}

/// rules §3: the owner's quiet hours, where unset (empty) or unparsable ones count as the
/// default; the second value explains a fallback from text that does not parse.
fn quiet_hours_or_default(text: &str) -> (CronSchedule, Option<String>) {
    let default = || CronSchedule::default_quiet_hours();
    match text.trim() {
        "" => (default(), None),
        text => match parse_quiet_hours(text) {
            Ok(schedule) => (schedule, None),
            Err(err) => (
                default(),
                Some(format!(
                    "{}; the default quiet hours {DEFAULT_QUIET_HOURS:?} are used",
                    err.at("owner_quiet_hours_schedule")
                )),
            ),
        },
    }
}

/// Parses a quiet-hours schedule: daily (day-of-month, month and day-of-week `*`) with one
/// minute and one hour (rules §3).
pub fn parse_quiet_hours(text: &str) -> Result<CronSchedule, ScheduleError> {
    let schedule = CronSchedule::parse(text)?;
    let fields = schedule.fields();
    let daily = fields.day_of_month_star && fields.month_star && fields.day_of_week_star;
    if !daily || fields.minute_count() != 1 || fields.hour_count() != 1 {
        return Err(ScheduleError::NotAllowed(format!(
            "quiet hours must be a daily schedule with one minute and one hour, like {:?}",
            DEFAULT_QUIET_HOURS
        )));
    }
    Ok(schedule)
}

/// rules §3 TTL: the template's default when users may not set their own autostop, else the
/// workspace's own (not a fallback). `None` = no TTL.
pub fn effective_ttl(
    user_autostop_enabled: bool,
    default_ttl_secs: u64,
    workspace_ttl_secs: u64,
) -> Result<Option<Duration>, ScheduleError> {
    let (secs, field) = if user_autostop_enabled {
        (workspace_ttl_secs, "workspace_ttl_secs")
    } else {
        (default_ttl_secs, "template.default_ttl_secs")
    };
    if secs == 0 {
        return Ok(None);
    }
    duration(secs).map(Some).ok_or_else(|| {
        ScheduleError::NotAllowed(format!("a TTL of {secs} seconds is out of range")).at(field)
    })
}

fn add(at: DateTime<Utc>, by: Duration) -> Result<DateTime<Utc>, ScheduleError> {
    at.checked_add_signed(by)
        .ok_or_else(|| ScheduleError::NotAllowed(format!("{at} + {by} is out of range")))
}

/// rules §3 `max_deadline`, in the quiet-hours zone; `None` without a required day.
fn max_deadline(
    completed: DateTime<Utc>,
    quiet: &CronSchedule,
    required_days: WeekdaySet,
    weeks: u32,
) -> Option<DateTime<Utc>> {
    if required_days.is_empty() {
        return None;
    }
    let zone = quiet.zone();
    let midnight = |date: NaiveDate| resolve_local(zone, date.and_time(NaiveTime::MIN));
    let quarter = TimeDelta::minutes(15);
    // The first quiet-hours instant after that midnight − 15 min.
    let quiet_after_midnight =
        |date: NaiveDate| quiet.next_after(midnight(date)?.checked_sub_signed(quarter)?);
    let leeway = completed.checked_add_signed(TimeDelta::hours(2))?;

    // Start from local midnight of the date of C + 2 h.
    let mut date = local_in(zone, leeway)?.date();
    let weeks = i64::from(weeks.max(1));
    if weeks > 1 {
        // Move to the Monday starting the next week whose number is a multiple of `weeks`,
        // weeks counted in local dates from the epoch Monday.
        let (y, m, d) = WEEK_EPOCH;
        let epoch = NaiveDate::from_ymd_opt(y, m, d)?;
        let week = (date - epoch).num_days().div_euclid(7);
        let remainder = week.rem_euclid(weeks);
        if remainder != 0 {
            date = epoch.checked_add_signed(TimeDelta::weeks(week + weeks - remainder))?;
        }
    }
    // Today's quiet hours too close (or past): start from the next midnight.
    if quiet_after_midnight(date)? < leeway {
        date = date.succ_opt()?;
    }
    // Advance day by day to a required weekday (one exists, so at most 6 steps).
    while !required_days.contains(date.weekday()) {
        date = date.succ_opt()?;
    }
    let check = midnight(date)?.checked_sub_signed(quarter)?;
    let check = check.max(completed.checked_add_signed(TimeDelta::hours(1))?);
    quiet.next_after(check)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::DayName::{self, *};

    use crate::t;

    /// A completion at `completed` with an 8 h workspace TTL and nothing else.
    fn inputs(completed: &str) -> DeadlineInputs<'static> {
        DeadlineInputs {
            completed_at: t(completed),
            is_prebuild: false,
            workspace_ttl_secs: 8 * 3600,
            autostart_schedule: None,
            quiet_hours_schedule: None,
            user_autostop_enabled: true,
            default_ttl_secs: 3600,
            autostop_requirement_days: WeekdaySet::default(),
            autostop_requirement_weeks: 1,
            autostart_days: WeekdaySet::EVERY_DAY,
        }
    }

    fn days(days: &[DayName]) -> WeekdaySet {
        WeekdaySet::from_days(days)
    }

    fn compute(inputs: &DeadlineInputs<'_>) -> Deadlines {
        compute_deadlines(inputs).unwrap_or_else(|err| panic!("{err}"))
    }

    #[test]
    fn ttl_is_the_workspace_ttl_when_users_may_set_it() {
        // 2025-06-02 is a Monday.
        let d = compute(&inputs("2025-06-02T09:00:00Z"));
        assert_eq!(d.deadline, Some(t("2025-06-02T17:00:00Z")));
        assert_eq!((d.max_deadline, d.next_start_at), (None, None));
        // No workspace TTL: no deadline (the template default is not a fallback).
        let d =
            compute(&DeadlineInputs { workspace_ttl_secs: 0, ..inputs("2025-06-02T09:00:00Z") });
        assert_eq!(d.deadline, None);
    }

    #[test]
    fn ttl_is_the_template_default_when_users_may_not() {
        let i = DeadlineInputs { user_autostop_enabled: false, ..inputs("2025-06-02T09:00:00Z") };
        assert_eq!(compute(&i).deadline, Some(t("2025-06-02T10:00:00Z")));
        let i = DeadlineInputs { default_ttl_secs: 0, ..i };
        assert_eq!(compute(&i).deadline, None);
    }

    #[test]
    fn prebuilds_get_nothing() {
        let i = DeadlineInputs {
            is_prebuild: true,
            autostart_schedule: Some("0 9 * * *"),
            ..inputs("2025-06-02T09:00:00Z")
        };
        assert_eq!(compute(&i), Deadlines::default());
    }

    #[test]
    fn autostart_crossing_restarts_the_ttl_at_the_autostart() {
        // Started by hand at 20:00 with an 18 h TTL; autostart 08:00 tomorrow → 08:00 + 18 h.
        let i = DeadlineInputs {
            workspace_ttl_secs: 18 * 3600,
            autostart_schedule: Some("0 8 * * *"),
            ..inputs("2025-06-02T20:00:00Z")
        };
        let d = compute(&i);
        assert_eq!(d.deadline, Some(t("2025-06-04T02:00:00Z")));
        assert_eq!(d.next_start_at, Some(t("2025-06-03T08:00:00Z")));
        // Not crossed: unchanged.
        let i = DeadlineInputs { workspace_ttl_secs: 8 * 3600, ..i };
        assert_eq!(compute(&i).deadline, Some(t("2025-06-03T04:00:00Z")));
        // The next firing is on a day the template does not allow: no crossing, and the
        // next start skips to an allowed day.
        let i = DeadlineInputs { workspace_ttl_secs: 18 * 3600, autostart_days: days(&[Thu]), ..i };
        let d = compute(&i);
        assert_eq!(d.deadline, Some(t("2025-06-03T14:00:00Z")));
        assert_eq!(d.next_start_at, Some(t("2025-06-05T08:00:00Z")));
    }

    #[test]
    fn weekly_autostop_requirement_with_default_quiet_hours() {
        // Completed Monday 09:00Z, requirement Saturday, quiet hours midnight UTC: the max
        // deadline is Saturday 00:00Z; the 8 h TTL is earlier, so it stays.
        let i = DeadlineInputs {
            quiet_hours_schedule: Some(DEFAULT_QUIET_HOURS),
            autostop_requirement_days: days(&[Sat]),
            ..inputs("2025-06-02T09:00:00Z")
        };
        let d = compute(&i);
        assert_eq!(d.max_deadline, Some(t("2025-06-07T00:00:00Z")));
        assert_eq!(d.deadline, Some(t("2025-06-02T17:00:00Z")));
        // A longer TTL is clamped to the max deadline.
        let d = compute(&DeadlineInputs { workspace_ttl_secs: 30 * 86400, ..i });
        assert_eq!(d.deadline, Some(t("2025-06-07T00:00:00Z")));
        // No TTL at all: the max deadline is the deadline.
        let d = compute(&DeadlineInputs { workspace_ttl_secs: 0, ..i });
        assert_eq!(d.deadline, Some(t("2025-06-07T00:00:00Z")));
        // Empty = the default quiet hours; null = no max deadline.
        let empty = compute(&DeadlineInputs { quiet_hours_schedule: Some(""), ..i });
        assert_eq!(empty, compute(&i));
        let none = compute(&DeadlineInputs { quiet_hours_schedule: None, ..i });
        assert_eq!(none.max_deadline, None);
    }

    #[test]
    fn the_two_hour_rule() {
        // Requirement every day, quiet hours midnight UTC. Completed 22:30Z: C + 2 h is
        // tomorrow 00:30, so start from tomorrow; its quiet hours (00:00) are before C + 2 h,
        // so the day after: max deadline 2025-06-04T00:00Z.
        let every_day = WeekdaySet::EVERY_DAY;
        let i = DeadlineInputs {
            quiet_hours_schedule: Some(DEFAULT_QUIET_HOURS),
            autostop_requirement_days: every_day,
            workspace_ttl_secs: 0,
            ..inputs("2025-06-02T22:30:00Z")
        };
        assert_eq!(compute(&i).max_deadline, Some(t("2025-06-04T00:00:00Z")));
        // Completed 21:00Z: C + 2 h = 23:00 today; today's quiet hours (00:00 today) are
        // past, so tomorrow's midnight.
        let i = DeadlineInputs { completed_at: t("2025-06-02T21:00:00Z"), ..i };
        assert_eq!(compute(&i).max_deadline, Some(t("2025-06-03T00:00:00Z")));
        // Completed 22:00Z: C + 2 h = tomorrow 00:00, not before it: tomorrow 00:00, exactly
        // 2 h later.
        let i = DeadlineInputs { completed_at: t("2025-06-02T22:00:00Z"), ..i };
        assert_eq!(compute(&i).max_deadline, Some(t("2025-06-03T00:00:00Z")));
    }

    #[test]
    fn quiet_hours_up_to_fifteen_minutes_before_the_required_day_count() {
        // Quiet hours 23:50 UTC, requirement Saturday: the first quiet instant after Saturday
        // 00:00 − 15 min is Friday 23:50.
        let i = DeadlineInputs {
            quiet_hours_schedule: Some("CRON_TZ=UTC 50 23 * * *"),
            autostop_requirement_days: days(&[Sat]),
            workspace_ttl_secs: 0,
            ..inputs("2025-06-02T09:00:00Z")
        };
        assert_eq!(compute(&i).max_deadline, Some(t("2025-06-06T23:50:00Z")));
        // Quiet hours 23:30: Saturday 23:30.
        let i = DeadlineInputs { quiet_hours_schedule: Some("CRON_TZ=UTC 30 23 * * *"), ..i };
        assert_eq!(compute(&i).max_deadline, Some(t("2025-06-07T23:30:00Z")));
    }

    #[test]
    fn quiet_hours_in_another_zone() {
        // Quiet hours 02:00 in New York (EDT, −4 → 06:00Z), requirement Saturday. Completed
        // Monday 2025-06-02 12:00Z (08:00 local): Saturday 2025-06-07 02:00 EDT = 06:00Z.
        let i = DeadlineInputs {
            quiet_hours_schedule: Some("CRON_TZ=America/New_York 0 2 * * *"),
            autostop_requirement_days: days(&[Sat]),
            workspace_ttl_secs: 0,
            ..inputs("2025-06-02T12:00:00Z")
        };
        assert_eq!(compute(&i).max_deadline, Some(t("2025-06-07T06:00:00Z")));
        // The local date counts: Friday 2025-06-06 23:30Z is 19:30 Friday in New York, and
        // C + 2 h = 21:30 Friday local, so Saturday's 02:00 EDT (06:00Z) is the next one.
        let i = DeadlineInputs { completed_at: t("2025-06-06T23:30:00Z"), ..i };
        assert_eq!(compute(&i).max_deadline, Some(t("2025-06-07T06:00:00Z")));
        // Saturday 2025-06-07 05:00Z = 01:00 local: C + 2 h = 03:00 local, past today's
        // 02:00 → next Saturday.
        let i = DeadlineInputs { completed_at: t("2025-06-07T05:00:00Z"), ..i };
        assert_eq!(compute(&i).max_deadline, Some(t("2025-06-14T06:00:00Z")));
    }

    #[test]
    fn every_two_weeks() {
        // Weeks from Monday 2023-01-02: 2025-06-02 is 126 weeks later (even), 2025-06-09 odd.
        let i = DeadlineInputs {
            quiet_hours_schedule: Some(DEFAULT_QUIET_HOURS),
            autostop_requirement_days: days(&[Sat]),
            autostop_requirement_weeks: 2,
            workspace_ttl_secs: 0,
            ..inputs("2025-06-02T09:00:00Z")
        };
        // Week 126 is a multiple of 2: this week's Saturday.
        assert_eq!(compute(&i).max_deadline, Some(t("2025-06-07T00:00:00Z")));
        // Completed in week 127: move to Monday of week 128 (2025-06-16), then Saturday.
        let i = DeadlineInputs { completed_at: t("2025-06-10T09:00:00Z"), ..i };
        assert_eq!(compute(&i).max_deadline, Some(t("2025-06-21T00:00:00Z")));
        // Every week: the Saturday of week 127.
        let i = DeadlineInputs { autostop_requirement_weeks: 1, ..i };
        assert_eq!(compute(&i).max_deadline, Some(t("2025-06-14T00:00:00Z")));
        // 0 reads as 1.
        let i = DeadlineInputs { autostop_requirement_weeks: 0, ..i };
        assert_eq!(compute(&i).max_deadline, Some(t("2025-06-14T00:00:00Z")));
    }

    /// Issue 18 item 1: a completion near the end of chrono's range, with quiet hours in a
    /// zone west of UTC and a required day, computes what it can and never panics.
    #[test]
    fn completions_at_the_ends_of_time_never_panic() {
        let max = DateTime::<Utc>::MAX_UTC;
        let min = DateTime::<Utc>::MIN_UTC;
        for completed_at in [max, max - TimeDelta::hours(4), min, min + TimeDelta::hours(1)] {
            for quiet in ["CRON_TZ=America/New_York 0 2 * * *", "CRON_TZ=Asia/Tokyo 0 2 * * *"] {
                let i = DeadlineInputs {
                    completed_at,
                    quiet_hours_schedule: Some(quiet),
                    autostart_schedule: Some("CRON_TZ=America/New_York 0 9 * * *"),
                    autostop_requirement_days: days(&[Sat]),
                    autostop_requirement_weeks: 2,
                    workspace_ttl_secs: 0,
                    ..inputs("2025-06-02T09:00:00Z")
                };
                let _ = compute_deadlines(&i);
            }
        }
    }

    /// Issue 18 item 4: quiet hours are read only when a day is required; when they are
    /// needed and do not parse, the default quiet hours stand in (rules §3), and the result
    /// says so.
    #[test]
    fn quiet_hours_that_do_not_matter_do_not_matter() {
        for bad in ["not a schedule", "0 0 * * 1", "CRON_TZ=Nowhere/Land 0 0 * * *"] {
            let i = DeadlineInputs {
                quiet_hours_schedule: Some(bad),
                ..inputs("2025-06-02T09:00:00Z")
            };
            let d = compute(&i);
            assert_eq!(d.deadline, Some(t("2025-06-02T17:00:00Z")), "{bad}");
            assert_eq!((d.max_deadline, d.note.as_deref()), (None, None), "{bad}");

            let i = DeadlineInputs {
                autostop_requirement_days: days(&[Sat]),
                workspace_ttl_secs: 30 * 86_400,
                ..i
            };
            let d = compute(&i);
            assert_eq!(d.max_deadline, Some(t("2025-06-07T00:00:00Z")), "{bad}");
            assert_eq!(d.deadline, Some(t("2025-06-07T00:00:00Z")), "{bad}");
            let note = d.note.unwrap_or_default();
            assert!(note.starts_with("owner_quiet_hours_schedule: "), "{note}");
            assert!(note.ends_with("the default quiet hours \"CRON_TZ=UTC 0 0 * * *\" are used"));
        }
    }

    #[test]
    fn bad_schedules_are_errors_not_panics() {
        let i = DeadlineInputs {
            autostart_schedule: Some("0 9 1 * *"),
            ..inputs("2025-06-02T09:00:00Z")
        };
        let err = compute_deadlines(&i).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.starts_with("autostart_schedule: an autostart schedule")));
        let err = parse_quiet_hours("0 0 * * 1").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.starts_with("quiet hours must be a daily schedule")));
        assert!(parse_quiet_hours("0 0-1 * * *").is_err());
        assert!(parse_quiet_hours("CRON_TZ=Nowhere/Land 0 0 * * *").is_err());
        let i = DeadlineInputs { workspace_ttl_secs: u64::MAX, ..inputs("2025-06-02T09:00:00Z") };
        assert!(compute_deadlines(&i).is_err());
        let i = DeadlineInputs {
            workspace_ttl_secs: i64::MAX as u64 / 1000,
            ..inputs("2025-06-02T09:00:00Z")
        };
        assert!(compute_deadlines(&i).is_err());
    }
}
