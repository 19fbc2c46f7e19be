//! Random snapshots at the edges never make the core panic, lifecycle included (the
//! prebuild and schedule property tests have their own edge cases; the lifecycle ones stay
//! near a realistic `now`). Every corpus case has many of its values at once replaced by an
//! extreme of the same kind: instants at the ends of time or the epoch, counts and durations
//! at the integer limits, flags flipped. The replay is then valid and planned, or refused at
//! a named path.

use chrono::DateTime;
use poolkeeper_tests::corpus::corpus_cases;
use poolkeeper_tests::proptest_config;
use proptest::prelude::*;
use serde_json::Value;
use std::sync::OnceLock;

fn corpus() -> &'static [Value] {
    static CASES: OnceLock<Vec<Value>> = OnceLock::new();
    CASES.get_or_init(|| {
        ["lifecycle", "prebuilds", "schedule"]
            .iter()
            .flat_map(|area| corpus_cases(area))
            .map(|path| {
                let text = std::fs::read_to_string(path).expect("read corpus case");
                serde_json::from_str(&text).expect("corpus case is JSON")
            })
            .collect()
    })
}

const INSTANTS: [&str; 8] = [
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "-262143-01-01T00:00:00Z",
    "+262142-12-31T23:59:59.999999999Z",
    "+262142-12-31T20:00:00Z",
    "1970-01-01T00:00:00Z",
    "2262-04-11T23:47:16Z",
    "2025-03-30T01:00:00Z",
];

fn extreme_number(pick: u8) -> Value {
    match pick % 8 {
        0 => Value::from(0),
        1 => Value::from(-1),
        2 => Value::from(i64::MAX),
        3 => Value::from(i64::MIN),
        4 => Value::from(u64::MAX),
        5 => Value::from(u32::MAX),
        6 => Value::from(i32::MIN),
        _ => Value::from(1e300),
    }
}

/// Whether a scalar has an extreme of its kind: an instant, a number or a flag.
fn replaceable(value: &Value) -> bool {
    match value {
        Value::String(text) => DateTime::parse_from_rfc3339(text).is_ok(),
        Value::Number(_) | Value::Bool(_) => true,
        _ => false,
    }
}

fn count_replaceable(value: &Value) -> usize {
    match value {
        Value::Object(map) => map.values().map(count_replaceable).sum(),
        Value::Array(items) => items.iter().map(count_replaceable).sum(),
        scalar => usize::from(replaceable(scalar)),
    }
}

/// Replaces, replaceable scalar by replaceable scalar (depth first), those whose decision
/// says so by an extreme of the same kind; returns how many were replaced.
fn mutate(value: &mut Value, decisions: &[(bool, u8)], next: &mut usize) -> usize {
    match value {
        Value::Object(map) => map.values_mut().map(|v| mutate(v, decisions, next)).sum(),
        Value::Array(items) => items.iter_mut().map(|v| mutate(v, decisions, next)).sum(),
        scalar if replaceable(scalar) => {
            let (replace, pick) = decisions[*next % decisions.len()];
            *next += 1;
            if !replace {
                return 0;
            }
            *scalar = match &*scalar {
                Value::Number(_) => extreme_number(pick),
                Value::Bool(flag) => Value::Bool(!flag),
                _ => Value::from(INSTANTS[usize::from(pick) % INSTANTS.len()]),
            };
            1
        }
        _ => 0,
    }
}

/// Parses and, when valid, plans (twice: deterministic even at the edges); `Ok(true)` when
/// the core ran, `Ok(false)` when the replay was refused at a named path.
fn parse_and_plan(document: &Value) -> Result<bool, TestCaseError> {
    match poolkeeper_core::parse_replay(&document.to_string()) {
        Ok(input) => {
            let output = serde_json::to_value(poolkeeper_core::run_replay(&input));
            let again = serde_json::to_value(poolkeeper_core::run_replay(&input));
            prop_assert!(output.is_ok());
            prop_assert_eq!(output.ok(), again.ok());
            Ok(true)
        }
        Err(err) => {
            prop_assert!(!err.path.is_empty() && !err.message.is_empty(), "{err}");
            Ok(false)
        }
    }
}

proptest! {
    #![proptest_config(proptest_config("reliability_core_props", 400))]

    #[test]
    fn extreme_snapshots_never_make_the_core_panic(
        case in any::<prop::sample::Index>(),
        decisions in prop::collection::vec((prop::bool::weighted(0.3), any::<u8>()), 1..64),
    ) {
        let cases = corpus();
        let mut document = cases[case.index(cases.len())].clone();
        let mut next = 0;
        mutate(&mut document, &decisions, &mut next);
        parse_and_plan(&document)?;
    }
}

/// The mutations are not all refused at the door: a good share reaches the core (otherwise
/// the property above would test the parser only).
#[test]
fn extreme_snapshots_mostly_reach_the_core() {
    let mut state: u64 = 0x5eed_1234_abcd_0001;
    let mut next_random = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let (mut planned, mut refused, mut replaced) = (0, 0, 0);
    for (i, case) in corpus().iter().cycle().take(600).enumerate() {
        // One extreme value per case, then a few at once.
        let slots = count_replaceable(case).max(1);
        let mut decisions: Vec<(bool, u8)> = vec![(false, 0); slots];
        for _ in 0..1 + i % 3 {
            let random = next_random();
            decisions[(random % slots as u64) as usize] = (true, (random >> 32) as u8);
        }
        let mut document = case.clone();
        let mut next = 0;
        replaced += mutate(&mut document, &decisions, &mut next);
        match parse_and_plan(&document) {
            Ok(true) => planned += 1,
            Ok(false) => refused += 1,
            Err(err) => panic!("{err}"),
        }
    }
    assert!(planned >= 100, "only {planned} of 600 reached the core");
    println!(
        "core props: 600 extreme snapshots, {replaced} values replaced, planned {planned}, \
         refused {refused}, violations: 0"
    );
}
