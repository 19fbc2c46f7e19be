//! Hostile replay input never makes the core panic: random byte-level and structural mutations
//! of every corpus file are either rejected with a path-naming error or planned normally.

use poolkeeper_tests::corpus::{corpus_cases, corpus_dir};
use poolkeeper_tests::mutate::{count_scalars, hostile_scalar, replace_scalar, splice};
use poolkeeper_tests::proptest_config;
use proptest::prelude::*;
use serde_json::Value;
use std::sync::OnceLock;

fn corpus_texts() -> &'static [String] {
    static TEXTS: OnceLock<Vec<String>> = OnceLock::new();
    TEXTS.get_or_init(|| {
        ["lifecycle", "prebuilds", "schedule"]
            .iter()
            .flat_map(|area| corpus_cases(area))
            .map(|path| std::fs::read_to_string(path).expect("read corpus case"))
            .collect()
    })
}

/// Text for a replay file's fields: the extremes of time (chrono's, ±262143 years, too),
/// schedules that do not parse or that put local times beyond the range.
const REPLAY_TEXTS: &[&str] = &[
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "-262143-01-01T00:00:00Z",
    "+262142-12-31T23:59:59Z",
    "+262142-12-31T20:00:00Z",
    "-262143-01-01T00:00:00-05:00",
    "CRON_TZ=America/New_York 0 9 * * *",
    "CRON_TZ=Pacific/Kiritimati 0 2 * * *",
    "* 9 * * sun-sun",
    "CRON_TZ=Mars/Olympus * * * * *",
    "*/0 * * * *",
];

/// Parses and, when valid, runs the core; the only acceptable failure is a `ReplayError`.
fn parse_and_run(text: &str) -> Result<(), TestCaseError> {
    match poolkeeper_core::parse_replay(text) {
        Ok(input) => {
            let output = poolkeeper_core::run_replay(&input);
            prop_assert!(serde_json::to_string(&output).is_ok());
        }
        Err(err) => prop_assert!(!err.path.is_empty() && !err.message.is_empty(), "{err}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(proptest_config("replay_hostile_input", 1000))]

    /// Structural mutation: any scalar of any corpus file replaced by a hostile value.
    #[test]
    fn replacing_any_scalar_never_panics(
        case in any::<prop::sample::Index>(),
        pick in any::<prop::sample::Index>(),
        replacement in hostile_scalar(REPLAY_TEXTS),
    ) {
        let texts = corpus_texts();
        let text = &texts[case.index(texts.len())];
        let mut document: Value = serde_json::from_str(text).expect("corpus is JSON");
        let mut n = pick.index(count_scalars(&document).max(1));
        prop_assert!(replace_scalar(&mut document, &mut n, &replacement).is_some());
        parse_and_run(&document.to_string())?;
    }

    /// Byte-level mutation: a slice of a corpus file cut out or garbage spliced in.
    #[test]
    fn corrupting_bytes_never_panics(
        case in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        cut in 0usize..16,
        garbage in ".{0,8}",
    ) {
        let texts = corpus_texts();
        let text = &texts[case.index(texts.len())];
        let mutated = splice(text, at, cut, &garbage);
        parse_and_run(&mutated)?;
    }
}

/// The two crashes of issue 18: `now` at chrono's first instant with a New York autostart
/// schedule, and a completion near its last instant with quiet hours and a required day.
/// Both replay (a file of the recorded shape, so valid) without a panic.
#[test]
fn the_ends_of_time_replay_without_panic() {
    let read = |path: &str| -> Value {
        let text = std::fs::read_to_string(corpus_dir("").join(path)).expect("read corpus case");
        serde_json::from_str(&text).expect("corpus is JSON")
    };
    let mut lifecycle = read("lifecycle/autostart_missed_start_caught_up.json");
    lifecycle["now"] = Value::from("-262143-01-01T00:00:00Z");
    lifecycle["lifecycle"]["workspaces"][0]["autostart_schedule"] =
        Value::from("CRON_TZ=America/New_York 30 9 * * 1-5");
    lifecycle["lifecycle"]["workspaces"][0]["next_start_at"] = Value::Null;
    let input = poolkeeper_core::parse_replay(&lifecycle.to_string()).expect("valid replay");
    let output = poolkeeper_core::run_replay(&input);
    assert_eq!(output.lifecycle.map(|d| d.len()), Some(1));

    let mut completion = read("schedule/stops_at_0200_berlin_quiet_hours.json");
    for entry in completion["build_completions"].as_array_mut().expect("entries") {
        entry["completed_at"] = Value::from("+262142-12-31T20:00:00Z");
        entry["owner_quiet_hours_schedule"] = Value::from("CRON_TZ=America/New_York 0 2 * * *");
        entry["template"]["autostop_requirement_days"] = serde_json::json!(["sat"]);
    }
    let input = poolkeeper_core::parse_replay(&completion.to_string()).expect("valid replay");
    let output = poolkeeper_core::run_replay(&input);
    assert!(output.build_completions.is_some_and(|results| !results.is_empty()));
}
