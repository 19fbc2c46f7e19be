//! Property tests of the schedule rules (rules §1, §3). Each invariant is stated in words, then
//! checked on random schedules against a brute-force oracle that walks whole minutes and reads
//! local time directly, independently of the core's search.

use chrono::{
    DateTime, Datelike, NaiveDate, NaiveDateTime, TimeDelta, TimeZone, Timelike, Utc, Weekday,
};
use chrono_tz::Tz;
use poolkeeper_core::build::Transition;
use poolkeeper_core::schedule::{
    bump_activity, complete_build, next_autostart, parse_autostart, parse_quiet_hours,
    ActivityBuild, ActivityReport, ActivityTemplate, BuildCompletion, CompletionTemplate,
    CronSchedule, DayName, PrebuildWindows, ScheduleError, WeekdaySet,
};
use poolkeeper_tests::proptest_config;
use proptest::prelude::*;
use proptest::sample::select;

/// Zones with DST, half- and quarter-hour offsets, a 30-minute DST shift and a gap at midnight.
const ZONES: &[&str] = &[
    "UTC",
    "Europe/London",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Pacific/Chatham",
];

/// The 2025 DST transitions of those zones (zone index, instant), so that gaps and folds come
/// up often.
const TRANSITIONS: &[(usize, &str)] = &[
    (1, "2025-03-30T01:00:00Z"),
    (1, "2025-10-26T01:00:00Z"),
    (2, "2025-03-09T07:00:00Z"),
    (2, "2025-11-02T06:00:00Z"),
    (5, "2025-04-05T15:00:00Z"),
    (5, "2025-10-04T15:30:00Z"),
    (6, "2025-04-06T03:00:00Z"),
    (6, "2025-09-07T04:00:00Z"),
    (7, "2025-04-05T14:00:00Z"),
    (7, "2025-09-27T14:00:00Z"),
];

const WEEKDAYS: [Weekday; 7] = [
    Weekday::Sun,
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
];

use poolkeeper_tests::seed::t;

/// A random instant with sub-second precision, over 2024–2026.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (1_704_067_200i64..1_798_761_600, 0u32..1_000_000_000)
        .prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).expect("in range"))
}

/// A zone index and an instant: any zone at any time, or a zone within days or hours of one
/// of its DST transitions.
fn zone_and_instant() -> impl Strategy<Value = (usize, DateTime<Utc>)> {
    let near = |reach: i64| {
        (0..TRANSITIONS.len(), -reach..reach, 0u32..1_000_000_000).prop_map(
            |(index, delta, nanos)| {
                let (zone, at) = TRANSITIONS[index];
                (zone, t(at) + TimeDelta::seconds(delta) + TimeDelta::nanoseconds(nanos.into()))
            },
        )
    };
    prop_oneof![(0..ZONES.len(), instant()), near(3 * 86_400), near(3 * 3600)]
}

/// A schedule described as plain sets (the oracle's view) and rendered as cron text.
#[derive(Debug, Clone)]
struct Spec {
    minutes: u64,
    hours: u32,
    /// `None` = `*`.
    days_of_month: Option<u32>,
    months: Option<u16>,
    /// Bit 0 = Sunday. `None` = `*`.
    days_of_week: Option<u8>,
    /// How to spell day-of-week values: numbers with Sunday 0, numbers with Sunday 7, names.
    spelling: u8,
    /// Day-of-week text written with ranges, names and steps (its set is `days_of_week`).
    dow_text: Option<String>,
}

impl Spec {
    fn render(&self) -> String {
        let list = |bits: u64, lo: u32, hi: u32| {
            (lo..=hi).filter(|v| bits & (1 << v) != 0).map(|v| v.to_string()).collect::<Vec<_>>()
        };
        let field = |bits: Option<u64>, lo: u32, hi: u32| match bits {
            None => "*".to_owned(),
            Some(bits) => compress(&list(bits, lo, hi)),
        };
        let dow = match (&self.dow_text, self.days_of_week) {
            (Some(text), _) => text.clone(),
            (None, None) => "*".to_owned(),
            (None, Some(bits)) => {
                const NAMES: [&str; 7] = ["sun", "MON", "Tue", "wed", "THU", "fri", "Sat"];
                let items: Vec<String> = (0..7)
                    .filter(|d| bits & (1 << d) != 0)
                    .map(|d| match (self.spelling, d) {
                        (1, 0) => "7".to_owned(),
                        (2, _) => NAMES[d].to_owned(),
                        _ => d.to_string(),
                    })
                    .collect();
                // Ranges only for plain numbers (Sunday 7 sorts last otherwise).
                if self.spelling == 0 {
                    compress(&items)
                } else {
                    items.join(",")
                }
            }
        };
        let minute = if self.minutes == (1u64 << 60) - 1 {
            "*".to_owned()
        } else {
            field(Some(self.minutes), 0, 59)
        };
        format!(
            "{minute} {} {} {} {dow}",
            field(Some(u64::from(self.hours)), 0, 23),
            field(self.days_of_month.map(u64::from), 1, 31),
            field(self.months.map(u64::from), 1, 12),
        )
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        if let Some(months) = self.months {
            if months & (1 << date.month()) == 0 {
                return false;
            }
        }
        let by_day = self.days_of_month.map(|bits| bits & (1 << date.day()) != 0);
        let by_weekday =
            self.days_of_week.map(|bits| bits & (1 << date.weekday().num_days_from_sunday()) != 0);
        match (by_day, by_weekday) {
            (Some(a), Some(b)) => a || b,
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => true,
        }
    }

    fn matches(&self, local: NaiveDateTime) -> bool {
        self.minutes & (1 << local.minute()) != 0
            && self.hours & (1 << local.hour()) != 0
            && self.day_matches(local.date())
    }

    fn window_contains(&self, local: NaiveDateTime) -> bool {
        self.hours & (1 << local.hour()) != 0 && self.day_matches(local.date())
    }
}

/// `1,2,3,5` → `1-3,5` (only for plain, increasing numbers).
fn compress(items: &[String]) -> String {
    let numbers: Vec<u32> = items.iter().filter_map(|s| s.parse().ok()).collect();
    if numbers.len() != items.len() {
        return items.join(",");
    }
    let mut parts = Vec::new();
    let mut i = 0;
    while i < numbers.len() {
        let mut j = i;
        while j + 1 < numbers.len() && numbers[j + 1] == numbers[j] + 1 {
            j += 1;
        }
        parts.push(if j > i + 1 {
            format!("{}-{}", numbers[i], numbers[j])
        } else if j == i + 1 {
            format!("{},{}", numbers[i], numbers[j])
        } else {
            numbers[i].to_string()
        });
        i = j + 1;
    }
    parts.join(",")
}

fn bits_in(lo: u32, hi: u32) -> impl Strategy<Value = u64> {
    let width = hi - lo + 1;
    (1u64..(1 << width)).prop_map(move |bits| bits << lo)
}

fn sparse_bits(lo: u32, hi: u32, max: usize) -> impl Strategy<Value = u64> {
    proptest::collection::btree_set(lo..=hi, 1..=max)
        .prop_map(|set| set.into_iter().fold(0u64, |bits, v| bits | 1 << v))
}

/// An autostart schedule (day-of-month and month `*`).
fn autostart_spec() -> impl Strategy<Value = Spec> {
    (
        prop_oneof![sparse_bits(0, 59, 3), Just((1u64 << 60) - 1)],
        prop_oneof![sparse_bits(0, 23, 3), bits_in(0, 23)],
        prop_oneof![Just(None), bits_in(0, 6).prop_map(|b| Some(b as u8))],
        0u8..3,
    )
        .prop_map(|(minutes, hours, days_of_week, spelling)| Spec {
            minutes,
            hours: hours as u32,
            days_of_month: None,
            months: None,
            days_of_week,
            spelling,
            dow_text: None,
        })
        .prop_flat_map(with_written_days)
}

/// A day-of-week list of one to three items written as crontab allows (issue 18): single
/// days, ranges `a-b` (ending in 7 or the name `sun` for Sunday), steps `a-b/s`, `N/s` (from N
/// to 7) and `*/s`, numbers or names, and the set of weekdays it means (bit 0 = Sunday),
/// worked out here from crontab's rules, not by the parser under test.
fn written_days() -> impl Strategy<Value = (String, u8)> {
    const NAMES: [&str; 7] = ["sun", "Mon", "TUE", "wed", "thu", "FRI", "sat"];
    let item =
        (0u8..=7, 0u8..=7, 1u8..=7, 0u8..5, any::<bool>()).prop_map(|(a, b, step, form, names)| {
            let (a, b) = (a.min(b), a.max(b));
            // A name for a start; a range end of Sunday after Monday.. is `sun` (= 7).
            let start = |d: u8| {
                if names && d < 7 {
                    NAMES[usize::from(d)].to_owned()
                } else {
                    d.to_string()
                }
            };
            let end = |a: u8, d: u8| match d {
                7 if names && a > 0 => "sun".to_owned(),
                0 if names => "sun".to_owned(),
                7 => "7".to_owned(),
                d if names => NAMES[usize::from(d)].to_owned(),
                d => d.to_string(),
            };
            let (text, first, last, step) = match form {
                0 => (start(a), a, a, 1),
                1 => (format!("{}-{}", start(a), end(a, b)), a, b, 1),
                2 => (format!("{}-{}/{step}", start(a), end(a, b)), a, b, step),
                3 => (format!("{}/{step}", start(a)), a, 7, step),
                _ => {
                    let step = step.max(2);
                    (format!("*/{step}"), 0, 7, step)
                }
            };
            let bits =
                (first..=last).step_by(usize::from(step)).fold(0u8, |bits, d| bits | 1 << (d % 7));
            (text, bits)
        });
    proptest::collection::vec(item, 1..=3).prop_map(|items| {
        let text = items.iter().map(|(text, _)| text.as_str()).collect::<Vec<_>>().join(",");
        (text, items.iter().fold(0, |bits, (_, b)| bits | b))
    })
}

/// `spec`, or (one time in three) `spec` with its day of week written by `written_days`.
fn with_written_days(spec: Spec) -> impl Strategy<Value = Spec> {
    prop_oneof![
        2 => Just(spec.clone()),
        1 => written_days().prop_map(move |(text, bits)| Spec {
            days_of_week: Some(bits),
            dow_text: Some(text),
            ..spec.clone()
        }),
    ]
}

fn allowed_days() -> impl Strategy<Value = WeekdaySet> {
    proptest::collection::vec(any::<bool>(), 7).prop_map(|bits| {
        let days: Vec<DayName> =
            DayName::ALL.into_iter().zip(bits).filter(|(_, on)| *on).map(|(d, _)| d).collect();
        WeekdaySet::from_days(&days)
    })
}

/// Whether `spec` fires at whole UTC minute `m` in `zone`, by the DST rules of rules §1 read
/// off the clock: a local time fires at its first occurrence; local times skipped by a jump
/// forward fire at the first instant after the jump.
fn fires_at<Z: TimeZone>(spec: &Spec, zone: &Z, m: DateTime<Utc>) -> bool {
    let local = m.with_timezone(zone).naive_local();
    let first_occurrence =
        zone.from_local_datetime(&local).earliest().is_some_and(|at| at.with_timezone(&Utc) == m);
    if spec.matches(local) && first_occurrence {
        return true;
    }
    let before = (m - TimeDelta::minutes(1)).with_timezone(zone).naive_local();
    let mut skipped = before + TimeDelta::minutes(1);
    while skipped < local {
        if spec.matches(skipped) {
            return true;
        }
        skipped += TimeDelta::minutes(1);
    }
    false
}

fn ceil_minute(at: DateTime<Utc>) -> DateTime<Utc> {
    let floor = DateTime::from_timestamp(at.timestamp().div_euclid(60) * 60, 0).expect("range");
    if floor == at {
        floor
    } else {
        floor + TimeDelta::minutes(1)
    }
}

proptest! {
    #![proptest_config(proptest_config("schedule_props", 1000))]

    /// `next_autostart(after)` is strictly after `after`, within 14 days, a firing of the
    /// schedule on an allowed local weekday, and no such firing lies strictly between them;
    /// when it is `None`, there is none in the 14 days.
    #[test]
    fn next_autostart_is_the_first_allowed_firing(
        spec in autostart_spec(),
        (zone_index, after) in zone_and_instant(),
        allowed in allowed_days(),
    ) {
        let text = format!("CRON_TZ={} {}", ZONES[zone_index], spec.render());
        let schedule = parse_autostart(&text)
            .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        let zone = schedule.zone();
        let next = next_autostart(after, &schedule, allowed);
        let horizon = after + TimeDelta::days(14);
        if let Some(n) = next {
            prop_assert!(n > after && n <= horizon, "{text}: {n} not in ({after}, {horizon}]");
            prop_assert!(allowed.contains(n.with_timezone(&zone).weekday()));
            prop_assert!(fires_at(&spec, &zone, n), "{text}: {n} is not a firing");
        }
        let end = next.unwrap_or(horizon + TimeDelta::seconds(1));
        let mut m = ceil_minute(after);
        if m == after {
            m += TimeDelta::minutes(1);
        }
        while m < end {
            let local_day = m.with_timezone(&zone).weekday();
            if allowed.contains(local_day) && fires_at(&spec, &zone, m) {
                prop_assert!(false, "{text}: {m} fires on an allowed day before {next:?}");
            }
            m += TimeDelta::minutes(1);
        }
    }

    /// Window membership is exactly "local month, day (OR rule) and hour are in the fields",
    /// checked minute by minute over three days; windows that validate never share an
    /// instant; `next_edge_after` is the first instant after `t` where the open window
    /// changes.
    #[test]
    fn windows_agree_with_local_time(
        specs in proptest::collection::vec(window_spec(), 1..=3),
        partition in proptest::collection::vec(0u32..24, 2),
        disjoint_hours in any::<bool>(),
        (zone_index, start) in zone_and_instant(),
        lead in prop_oneof![Just(0u64), 0u64..7200],
    ) {
        let mut specs = specs;
        if disjoint_hours {
            // Keep each window to its own band of hours so that most sets validate.
            let (a, b) = (partition[0].min(partition[1]), partition[0].max(partition[1]));
            let bands = [(0, a), (a, b), (b, 24)];
            for (spec, (lo, hi)) in specs.iter_mut().zip(bands) {
                let band: u32 = (lo..hi).fold(0, |bits, h| bits | 1 << h);
                spec.hours = if spec.hours & band != 0 { spec.hours & band } else { band };
            }
            specs.retain(|s| s.hours != 0);
        }
        let texts: Vec<String> = specs.iter().map(Spec::render).collect();
        let zone_name = ZONES[zone_index];
        // Overlap is decided exactly: some date of a 28-year calendar cycle has an hour in
        // two windows iff validation rejects the set.
        let overlapping = overlap_by_calendar(&specs);
        let windows = match PrebuildWindows::validate(zone_name, texts.iter().map(String::as_str)) {
            Ok(windows) => windows,
            Err(err) => {
                let is_overlap = matches!(&err, ScheduleError::At { error, .. }
                    if matches!(**error, ScheduleError::Overlap { .. }));
                prop_assert!(is_overlap, "{texts:?}: {err}");
                prop_assert!(overlapping, "{texts:?} rejected but never overlap: {err}");
                return Ok(());
            }
        };
        prop_assert!(!overlapping, "{texts:?} accepted but overlap");
        let zone = windows.zone();
        let lead_delta = TimeDelta::seconds(lead as i64);
        let open = |at: DateTime<Utc>| {
            let local = at.with_timezone(&zone).naive_local();
            let inside: Vec<usize> =
                (0..specs.len()).filter(|&i| specs[i].window_contains(local)).collect();
            inside
        };
        // Pre-warming (rules §4): a window is open at `at` iff it contains some instant of
        // `[at, at + lead]`; the first in the order given wins. Every window edge in these
        // zones falls on a UTC quarter hour, so `[at, at + lead]` meets a window iff the
        // window contains `at` or one of the quarter hours in `(at, at + lead]`.
        let quarter = TimeDelta::minutes(15);
        let open_with_lead = |at: DateTime<Utc>| -> Result<Option<usize>, TestCaseError> {
            let mut probes = vec![at];
            let mut q = DateTime::from_timestamp(at.timestamp().div_euclid(900) * 900, 0)
                .expect("in range") + quarter;
            while q <= at + lead_delta {
                probes.push(q);
                q += quarter;
            }
            for &probe in &probes {
                prop_assert!(open(probe).len() <= 1, "{texts:?} overlap at {probe}");
            }
            Ok((0..specs.len()).find(|&i| probes.iter().any(|&p| open(p).contains(&i))))
        };
        let state = open_with_lead(start)?;
        prop_assert_eq!(windows.first_open(start, lead), state, "{:?} at {}", texts, start);

        // The open window can only change at a quarter hour q (a window closes on time) or
        // at q − lead (a window opens early): check at every such instant of three days, in
        // order; the first where it differs is the next edge, exactly.
        let span_end = start + TimeDelta::days(3);
        let mut candidates = Vec::new();
        let mut q = DateTime::from_timestamp(start.timestamp().div_euclid(900) * 900, 0)
            .expect("in range");
        while q <= span_end + lead_delta {
            for c in [q, q - lead_delta] {
                if c > start && c <= span_end {
                    candidates.push(c);
                }
            }
            q += quarter;
        }
        candidates.sort();
        candidates.dedup();
        let mut expected_edge = None;
        for &c in &candidates {
            let open_then = open_with_lead(c)?;
            prop_assert_eq!(windows.first_open(c, lead), open_then, "{:?} at {}", texts, c);
            if expected_edge.is_none() && open_then != state {
                expected_edge = Some(c);
            }
        }
        let edge = windows.next_edge_after(start, lead);
        match expected_edge {
            Some(expected) => prop_assert_eq!(
                edge, Some(expected), "{:?} {} lead {} after {}", texts, zone_name, lead, start
            ),
            None => prop_assert!(
                edge.is_none_or(|e| e > span_end),
                "{texts:?}: edge {edge:?} inside a constant span"
            ),
        }
    }

    /// Parsing and validation never panic, whatever the text.
    #[test]
    fn validation_never_panics(
        crons in proptest::collection::vec(cron_like(), 0..4),
        zone in prop_oneof![
            Just(String::new()),
            "[A-Za-z_/+-]{0,20}",
            (0..ZONES.len()).prop_map(|i| ZONES[i].to_owned()),
        ],
        at in instant(),
        lead in any::<u64>(),
    ) {
        for text in &crons {
            let _ = CronSchedule::parse(text).map(|s| s.next_after(at));
            let _ = parse_autostart(text).map(|s| next_autostart(at, &s, WeekdaySet::EVERY_DAY));
            let _ = parse_quiet_hours(text);
            let with_zone = format!("CRON_TZ={zone} {text}");
            let _ = CronSchedule::parse(&with_zone).map(|s| s.next_after(at));
        }
        if let Ok(windows) = PrebuildWindows::validate(&zone, crons.iter().map(String::as_str)) {
            let _ = windows.first_open(at, lead);
            let _ = windows.next_edge_after(at, lead);
        }
        let completion = BuildCompletion {
            id: "x".to_owned(),
            completed_at: at,
            is_prebuild: false,
            workspace_ttl_secs: lead,
            autostart_schedule: crons.first().cloned(),
            owner_quiet_hours_schedule: crons.get(1).cloned(),
            template: CompletionTemplate {
                user_autostop_enabled: true,
                default_ttl_secs: 0,
                autostop_requirement_days: vec![DayName::Sat],
                autostop_requirement_weeks: (lead % 5) as u32,
                autostart_days: DayName::ALL.to_vec(),
            },
        };
        let result = complete_build(&completion);
        if result.error.is_some() {
            prop_assert!(
                result.deadline.is_none()
                    && result.max_deadline.is_none()
                    && result.next_start_at.is_none()
            );
        }
        let report = ActivityReport {
            id: "x".to_owned(),
            at,
            is_prebuild: false,
            build: ActivityBuild {
                transition: Transition::Start,
                job_completed: true,
                deadline: Some(at),
                max_deadline: None,
            },
            workspace_ttl_secs: lead,
            next_autostart: Some(at + TimeDelta::minutes(1)),
            template: ActivityTemplate {
                default_ttl_secs: lead,
                user_autostop_enabled: lead % 2 == 0,
                activity_bump_secs: lead,
            },
        };
        let bumped = bump_activity(&report);
        prop_assert!(bumped.deadline.is_some_and(|d| d >= at));
    }
}

/// Whether two windows share an hour of some date in 2024–2051 (every month, day and weekday
/// combination occurs in 28 years).
fn overlap_by_calendar(specs: &[Spec]) -> bool {
    let mut date = NaiveDate::from_ymd_opt(2024, 1, 1).expect("date");
    let end = NaiveDate::from_ymd_opt(2052, 1, 1).expect("date");
    while date < end {
        let mut hours_seen = 0u32;
        for spec in specs.iter().filter(|s| s.day_matches(date)) {
            if hours_seen & spec.hours != 0 {
                return true;
            }
            hours_seen |= spec.hours;
        }
        date = date.succ_opt().expect("date");
    }
    false
}

/// A prebuild window: minute `*`, random hours, and sometimes restricted days and months.
fn window_spec() -> impl Strategy<Value = Spec> {
    (
        prop_oneof![sparse_bits(0, 23, 4), bits_in(0, 23)],
        prop_oneof![2 => Just(None), 1 => sparse_bits(1, 31, 4).prop_map(|b| Some(b as u32))],
        prop_oneof![3 => Just(None), 1 => sparse_bits(1, 12, 6).prop_map(|b| Some(b as u16))],
        prop_oneof![1 => Just(None), 2 => bits_in(0, 6).prop_map(|b| Some(b as u8))],
        0u8..3,
    )
        .prop_map(|(hours, days_of_month, months, days_of_week, spelling)| Spec {
            minutes: (1u64 << 60) - 1,
            hours: hours as u32,
            days_of_month,
            months,
            days_of_week,
            spelling,
            dow_text: None,
        })
        .prop_flat_map(with_written_days)
}

/// Text that looks like cron often enough to reach every branch of the parser.
fn cron_like() -> impl Strategy<Value = String> {
    let item = "[0-9*?/,a-zA-Z-]{0,8}";
    prop_oneof![
        proptest::collection::vec(item, 0..7).prop_map(|fields| fields.join(" ")),
        "(CRON_TZ=[A-Za-z/_]{0,15} )?[0-9*?/, -]{0,30}",
        any::<String>(),
    ]
}

#[test]
fn one_to_five_is_monday_to_friday_end_to_end() {
    // 2025-06-02 is a Monday: a week of `0 9 * * 1-5` fires Monday to Friday only.
    let schedule = CronSchedule::parse("0 9 * * 1-5").expect("valid");
    let mut at = t("2025-06-01T00:00:00Z");
    let mut days = Vec::new();
    while let Some(next) = schedule.next_after(at).filter(|n| *n < t("2025-06-08T00:00:00Z")) {
        days.push(next.weekday());
        at = next;
    }
    assert_eq!(days, WEEKDAYS[1..6].to_vec());
}

// rules §3 deadlines and the activity bump, against a model written here from the rulebook:
// local times are read off the zone database directly (chrono-tz), firings are found by
// walking local dates, and nothing of the core but the entry points is called.

/// rules §1 DST rule: the instant local time `local` denotes in `zone` — its first occurrence,
/// or, inside a spring gap, the first instant after the gap (found by walking local minutes
/// forward to the first that exists; every gap in these zones ends on a whole minute).
fn model_resolve(zone: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let mut probe = local;
    loop {
        if let Some(at) = zone.from_local_datetime(&probe).earliest() {
            return at.with_timezone(&Utc);
        }
        probe += TimeDelta::minutes(1);
    }
}

/// Bit of a weekday in the masks below: Monday = bit 0 … Sunday = bit 6 (the order of
/// `DayName::ALL`).
fn day_bit(day: Weekday) -> u8 {
    1 << day.num_days_from_monday()
}

/// The first firing strictly after `after` of "`minute` `hour` on the local weekdays in
/// `days`" in `zone`.
fn model_daily(zone: Tz, hour: u32, minute: u32, days: u8, after: DateTime<Utc>) -> DateTime<Utc> {
    let mut date = after.with_timezone(&zone).date_naive().pred_opt().expect("date");
    loop {
        if days & day_bit(date.weekday()) != 0 {
            let at = model_resolve(zone, date.and_hms_opt(hour, minute, 0).expect("time"));
            if at > after {
                return at;
            }
        }
        date = date.succ_opt().expect("date");
    }
}

fn zone(index: usize) -> Tz {
    ZONES[index].parse().expect("known zone")
}

/// Crontab day-of-week text (Sunday 0) of a Monday-first mask.
fn cron_days(days: u8) -> String {
    if days == 0x7f {
        return "*".to_owned();
    }
    let numbers: Vec<String> =
        (0..7).filter(|i| days & (1 << i) != 0).map(|i| ((i + 1) % 7).to_string()).collect();
    numbers.join(",")
}

fn day_names(days: u8) -> Vec<DayName> {
    (0..7).filter(|i| days & (1 << i) != 0).map(|i| DayName::ALL[i]).collect()
}

/// The owner's quiet hours as a completion carries them.
#[derive(Debug, Clone)]
enum Quiet {
    Null,
    Empty,
    /// Zone index, hour, minute; `bare` = written without `CRON_TZ=` when the zone is UTC.
    Daily {
        zone: usize,
        hour: u32,
        minute: u32,
        bare: bool,
    },
    Unparsable(&'static str),
}

#[derive(Debug, Clone)]
struct Completion {
    completed_at: DateTime<Utc>,
    user_autostop_enabled: bool,
    workspace_ttl_secs: u64,
    default_ttl_secs: u64,
    /// Zone index, hour, minute, weekdays (mask).
    autostart: Option<(usize, u32, u32, u8)>,
    autostart_days: u8,
    quiet: Quiet,
    required_days: u8,
    weeks: u32,
}

/// The deadline, max deadline and next start rules §3 gives for `c`.
type Expected = (Option<DateTime<Utc>>, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

fn model_deadlines(c: &Completion) -> Expected {
    let completed = c.completed_at;
    // TTL: the workspace's own when users may set it, else the template default.
    let ttl_secs = if c.user_autostop_enabled { c.workspace_ttl_secs } else { c.default_ttl_secs };
    let ttl = (ttl_secs > 0).then(|| TimeDelta::seconds(ttl_secs as i64));
    let mut deadline = ttl.map(|ttl| completed + ttl);
    let mut next_start = None;
    if let Some((z, hour, minute, days)) = c.autostart {
        let zone = zone(z);
        let allowed =
            |at: DateTime<Utc>| c.autostart_days & day_bit(at.with_timezone(&zone).weekday()) != 0;
        // Crossing: the next firing (any day), if allowed and before the deadline.
        let n = model_daily(zone, hour, minute, days, completed);
        if let (Some(current), Some(ttl)) = (deadline, ttl) {
            if allowed(n) && current > n {
                deadline = Some(n + ttl);
            }
        }
        // next_start_at: the first allowed firing within 14 days.
        let horizon = completed + TimeDelta::days(14);
        let mut at = completed;
        loop {
            let firing = model_daily(zone, hour, minute, days, at);
            if firing > horizon {
                break;
            }
            if allowed(firing) {
                next_start = Some(firing);
                break;
            }
            at = firing;
        }
    }
    let quiet = match (&c.quiet, c.required_days) {
        (_, 0) | (Quiet::Null, _) => None,
        (Quiet::Empty | Quiet::Unparsable(_), _) => Some((zone(0), 0, 0)),
        (&Quiet::Daily { zone: z, hour, minute, .. }, _) => Some((zone(z), hour, minute)),
    };
    let max_deadline = quiet.map(|(zone, hour, minute)| {
        let quiet_after = |at: DateTime<Utc>| model_daily(zone, hour, minute, 0x7f, at);
        let midnight = |date: NaiveDate| model_resolve(zone, date.and_time(Default::default()));
        let quarter = TimeDelta::minutes(15);
        let leeway = completed + TimeDelta::hours(2);
        let mut date = leeway.with_timezone(&zone).date_naive();
        let weeks = i64::from(c.weeks.max(1));
        let epoch = NaiveDate::from_ymd_opt(2023, 1, 2).expect("date");
        let mut week = (date - epoch).num_days().div_euclid(7);
        if week % weeks != 0 {
            while week % weeks != 0 {
                week += 1;
            }
            date = epoch + TimeDelta::weeks(week);
        }
        if quiet_after(midnight(date) - quarter) < leeway {
            date = date.succ_opt().expect("date");
        }
        while c.required_days & day_bit(date.weekday()) == 0 {
            date = date.succ_opt().expect("date");
        }
        quiet_after((midnight(date) - quarter).max(completed + TimeDelta::hours(1)))
    });
    if let Some(max) = max_deadline {
        if deadline.is_none_or(|current| max < current) {
            deadline = Some(max);
        }
    }
    (deadline, max_deadline, next_start)
}

fn ttl_secs() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(3600),
        Just(8 * 3600),
        Just(18 * 3600),
        Just(3 * 86_400),
        Just(30 * 86_400),
        1u64..(10 * 86_400),
    ]
}

fn weekday_mask() -> impl Strategy<Value = u8> {
    prop_oneof![Just(0x7fu8), 1u8..0x80]
}

fn quiet_strategy() -> impl Strategy<Value = Quiet> {
    prop_oneof![
        1 => Just(Quiet::Null),
        1 => Just(Quiet::Empty),
        // Quiet hours late in the evening often, where the fifteen-minute rule matters.
        6 => (
            0..ZONES.len(),
            prop_oneof![0u32..24, Just(23)],
            select(vec![0u32, 15, 30, 44, 45, 46, 50, 59]),
            any::<bool>(),
        )
            .prop_map(|(zone, hour, minute, bare)| Quiet::Daily { zone, hour, minute, bare }),
        1 => select(vec!["not a schedule", "0 0 * * 1", "0 0-1 * * *", "CRON_TZ=Nowhere/Land 0 0 * * *"])
            .prop_map(Quiet::Unparsable),
    ]
}

/// A completion, and how to move it onto an edge: `(edge, delta)` puts `C + 2 h` `delta`
/// seconds from a quiet-hours instant, or (`edge` = 1) makes the deadline `delta` seconds
/// past the next autostart.
fn completion_strategy() -> impl Strategy<Value = (Completion, u8, i64)> {
    (
        zone_and_instant(),
        (any::<bool>(), ttl_secs(), ttl_secs()),
        proptest::option::weighted(
            0.6,
            (0..ZONES.len(), 0u32..24, select(vec![0u32, 15, 30, 45]), weekday_mask()),
        ),
        (weekday_mask(), quiet_strategy()),
        (prop_oneof![1 => Just(0u8), 3 => weekday_mask()], 0u32..5),
        (0u8..3, select(vec![-60i64, -1, 0, 1, 60])),
    )
        .prop_map(
            |(
                (_, completed_at),
                (user_autostop_enabled, workspace_ttl_secs, default_ttl_secs),
                autostart,
                (autostart_days, quiet),
                (required_days, weeks),
                (edge, delta),
            )| {
                let completion = Completion {
                    completed_at,
                    user_autostop_enabled,
                    workspace_ttl_secs,
                    default_ttl_secs,
                    autostart,
                    autostart_days,
                    quiet,
                    required_days,
                    weeks,
                };
                (completion, edge, delta)
            },
        )
}

fn render_completion(c: &Completion) -> BuildCompletion {
    BuildCompletion {
        id: "c".to_owned(),
        completed_at: c.completed_at,
        is_prebuild: false,
        workspace_ttl_secs: c.workspace_ttl_secs,
        autostart_schedule: c.autostart.map(|(z, hour, minute, days)| {
            format!("CRON_TZ={} {minute} {hour} * * {}", ZONES[z], cron_days(days))
        }),
        owner_quiet_hours_schedule: match &c.quiet {
            Quiet::Null => None,
            Quiet::Empty => Some(String::new()),
            Quiet::Daily { zone, hour, minute, bare: true } if ZONES[*zone] == "UTC" => {
                Some(format!("{minute} {hour} * * *"))
            }
            Quiet::Daily { zone, hour, minute, .. } => {
                Some(format!("CRON_TZ={} {minute} {hour} * * *", ZONES[*zone]))
            }
            Quiet::Unparsable(text) => Some((*text).to_owned()),
        },
        template: CompletionTemplate {
            user_autostop_enabled: c.user_autostop_enabled,
            default_ttl_secs: c.default_ttl_secs,
            autostop_requirement_days: day_names(c.required_days),
            autostop_requirement_weeks: c.weeks,
            autostart_days: day_names(c.autostart_days),
        },
    }
}

/// An activity report: offsets in whole seconds from `A`, and edge switches applied once the
/// model's interval is known.
#[derive(Debug, Clone)]
struct Activity {
    at: DateTime<Utc>,
    is_prebuild: bool,
    transition: Transition,
    job_completed: bool,
    deadline: Option<i64>,
    max_deadline: Option<i64>,
    next_autostart: Option<i64>,
    workspace_ttl_secs: u64,
    default_ttl_secs: u64,
    user_autostop_enabled: bool,
    activity_bump_secs: u64,
}

fn activity_strategy() -> impl Strategy<Value = Activity> {
    (
        instant().prop_map(|at| DateTime::from_timestamp(at.timestamp(), 0).expect("range")),
        (
            proptest::bool::weighted(0.1),
            prop_oneof![
                8 => Just(Transition::Start),
                1 => Just(Transition::Stop),
                1 => Just(Transition::Delete),
            ],
            proptest::bool::weighted(0.9),
        ),
        (
            proptest::option::weighted(0.95, -7200i64..36_000),
            proptest::option::weighted(0.4, -3600i64..72_000),
            proptest::option::weighted(0.6, prop_oneof![-3600i64..10_000, Just(0), Just(3600)]),
        ),
        (ttl_secs(), ttl_secs(), any::<bool>()),
        prop_oneof![Just(0u64), Just(1800), Just(3600), Just(7200), 1u64..100_000],
    )
        .prop_map(
            |(
                at,
                (is_prebuild, transition, job_completed),
                (deadline, max_deadline, next_autostart),
                (workspace_ttl_secs, default_ttl_secs, user_autostop_enabled),
                activity_bump_secs,
            )| Activity {
                at,
                is_prebuild,
                transition,
                job_completed,
                deadline,
                max_deadline,
                next_autostart,
                workspace_ttl_secs,
                default_ttl_secs,
                user_autostop_enabled,
                activity_bump_secs,
            },
        )
}

/// rules §3 "Activity": the interval a bump uses at `A` (in seconds from `A`).
fn model_interval(a: &Activity) -> i64 {
    let bump = a.activity_bump_secs as i64;
    let ttl = if a.user_autostop_enabled { a.workspace_ttl_secs } else { a.default_ttl_secs };
    match a.next_autostart {
        Some(n) if 0 < n && n < bump => n + ttl as i64,
        _ => bump,
    }
}

/// rules §3 "Activity": the deadline after activity at `A`.
fn model_bump(a: &Activity) -> Option<DateTime<Utc>> {
    let at = a.at;
    let deadline = at + TimeDelta::seconds(a.deadline?);
    if a.is_prebuild
        || a.transition != Transition::Start
        || !a.job_completed
        || a.activity_bump_secs == 0
    {
        return Some(deadline);
    }
    let interval = model_interval(a);
    // deadline − 0.95 × interval < A, in whole seconds times 20.
    if 20 * (deadline - at).num_seconds() >= 19 * interval {
        return Some(deadline);
    }
    let raised = deadline.max(at + TimeDelta::seconds(interval));
    let capped = match a.max_deadline {
        Some(max) => raised.min(at + TimeDelta::seconds(max)),
        None => raised,
    };
    // Never backwards.
    Some(capped.max(deadline))
}

proptest! {
    #![proptest_config(proptest_config("deadline_props", 500))]

    /// rules §3 deadlines match the model: TTL (the workspace's or the template default),
    /// the autostart crossing (allowed day, strictly past the firing), max_deadline from the
    /// quiet hours (unset or unparsable = the default, ignored without a required day), the
    /// two-hour and fifteen-minute rules, required days, every-w-weeks from 2023-01-02, and
    /// `next_start_at`; a fallback from unparsable quiet hours is explained.
    #[test]
    fn deadlines_match_the_model((c, edge, delta) in completion_strategy()) {
        let mut c = c;
        match (edge, &c.quiet, c.autostart) {
            // C + 2 h right at (or a second or a minute off) a quiet-hours instant.
            (0, &Quiet::Daily { zone: z, hour, minute, .. }, _) => {
                let firing = model_daily(zone(z), hour, minute, 0x7f, c.completed_at);
                c.completed_at = firing - TimeDelta::hours(2) + TimeDelta::seconds(delta);
            }
            // The deadline right at (or just past) the next autostart: TTL = n − C + delta.
            (1, _, Some((z, hour, minute, days))) => {
                c.completed_at = DateTime::from_timestamp(c.completed_at.timestamp(), 0)
                    .expect("range");
                let n = model_daily(zone(z), hour, minute, days, c.completed_at);
                let ttl = ((n - c.completed_at).num_seconds() + delta).max(1) as u64;
                c.workspace_ttl_secs = ttl;
                c.default_ttl_secs = ttl;
            }
            _ => {}
        }
        let input = render_completion(&c);
        let result = complete_build(&input);
        prop_assert_eq!(result.error.as_deref(), None, "{:?}", input);
        let expected = model_deadlines(&c);
        prop_assert_eq!(
            (result.deadline, result.max_deadline, result.next_start_at),
            expected,
            "{:?}",
            input
        );
        let explained = c.required_days != 0 && matches!(c.quiet, Quiet::Unparsable(_));
        prop_assert_eq!(result.note.is_some(), explained, "{:?}", result.note);
    }

    /// rules §3 "Activity" matches the model: the bump interval (or the crossing of the next
    /// autostart, then a full TTL), the 5 % rule at its edge, the clamp to max_deadline, and a
    /// deadline that never moves backwards.
    #[test]
    fn activity_bump_matches_the_model(
        a in activity_strategy(),
        edge in proptest::option::weighted(0.3, select(vec![-1i64, 0, 1])),
    ) {
        let mut a = a;
        if let (Some(delta), Some(_)) = (edge, a.deadline) {
            // deadline − A = 0.95 × interval (+ delta), rounded to a whole second.
            a.deadline = Some(model_interval(&a) * 19 / 20 + delta);
        }
        let report = ActivityReport {
            id: "a".to_owned(),
            at: a.at,
            is_prebuild: a.is_prebuild,
            build: ActivityBuild {
                transition: a.transition,
                job_completed: a.job_completed,
                deadline: a.deadline.map(|s| a.at + TimeDelta::seconds(s)),
                max_deadline: a.max_deadline.map(|s| a.at + TimeDelta::seconds(s)),
            },
            workspace_ttl_secs: a.workspace_ttl_secs,
            next_autostart: a.next_autostart.map(|s| a.at + TimeDelta::seconds(s)),
            template: ActivityTemplate {
                default_ttl_secs: a.default_ttl_secs,
                user_autostop_enabled: a.user_autostop_enabled,
                activity_bump_secs: a.activity_bump_secs,
            },
        };
        prop_assert_eq!(bump_activity(&report).deadline, model_bump(&a), "{:?}", report);
    }
}
