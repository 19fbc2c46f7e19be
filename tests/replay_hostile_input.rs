//! Hostile replay input never makes the core panic: random byte-level and structural mutations
//! of every corpus file are either rejected with a path-naming error or planned normally.

use poolkeeper_tests::corpus::corpus_cases;
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

/// Replaces the `pick`-th scalar of the document (depth-first) with `replacement`.
fn replace_scalar(value: &mut Value, pick: &mut usize, replacement: &Value) -> bool {
    match value {
        Value::Object(map) => map.values_mut().any(|v| replace_scalar(v, pick, replacement)),
        Value::Array(items) => items.iter_mut().any(|v| replace_scalar(v, pick, replacement)),
        scalar => {
            if *pick == 0 {
                *scalar = replacement.clone();
                true
            } else {
                *pick -= 1;
                false
            }
        }
    }
}

fn count_scalars(value: &Value) -> usize {
    match value {
        Value::Object(map) => map.values().map(count_scalars).sum(),
        Value::Array(items) => items.iter().map(count_scalars).sum(),
        _ => 1,
    }
}

fn hostile_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        Just(Value::from("9999-12-31T23:59:59Z")),
        Just(Value::from("0001-01-01T00:00:00Z")),
        Just(Value::from("CRON_TZ=Mars/Olympus * * * * *")),
        Just(Value::from("*/0 * * * *")),
        Just(Value::from("'; DROP TABLE presets; --")),
        ".{0,40}".prop_map(Value::from),
    ]
}

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
        replacement in hostile_scalar(),
    ) {
        let texts = corpus_texts();
        let text = &texts[case.index(texts.len())];
        let mut document: Value = serde_json::from_str(text).expect("corpus is JSON");
        let mut n = pick.index(count_scalars(&document).max(1));
        prop_assert!(replace_scalar(&mut document, &mut n, &replacement));
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
        let mut start = at.index(text.len().max(1)).min(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (start + cut).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mutated = format!("{}{}{}", &text[..start], garbage, &text[end..]);
        parse_and_run(&mutated)?;
    }
}
