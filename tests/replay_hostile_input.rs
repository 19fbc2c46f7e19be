//! Hostile replay input never makes the core panic: random byte-level and structural mutations
//! of every corpus file are either rejected with a path-naming error or planned normally.

use poolkeeper_tests::corpus::corpus_cases;
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

/// Text for a replay file's fields: the extremes of time, schedules that do not parse.
const REPLAY_TEXTS: &[&str] = &[
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
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
