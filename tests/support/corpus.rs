//! The replay corpus: `tests/replay/<area>/<case>.json` with the expected decisions committed
//! beside it as `<case>.expected.json`. Run with `POOLKEEPER_BLESS=1` to (re)write the expected
//! files after an intended change, then review the diff.

use std::path::{Path, PathBuf};

/// Suffix of the committed expected output next to each case.
pub const EXPECTED_SUFFIX: &str = ".expected.json";

/// The corpus directory of `area` (e.g. `lifecycle`, `prebuilds`).
pub fn corpus_dir(area: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/replay").join(area)
}

/// Every case of `area`, sorted by file name.
pub fn corpus_cases(area: &str) -> Vec<PathBuf> {
    let dir = corpus_dir(area);
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("cannot read corpus {}: {err}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.ends_with(".json") && !name.ends_with(EXPECTED_SUFFIX)
        })
        .collect();
    cases.sort();
    cases
}

/// The expected-output path of a case.
pub fn expected_path(case: &Path) -> PathBuf {
    let name = case.file_name().and_then(|n| n.to_str()).expect("utf-8 case name");
    case.with_file_name(format!("{}{EXPECTED_SUFFIX}", name.trim_end_matches(".json")))
}

/// Renders decisions exactly as `poolkeeper replay --pretty` prints them.
pub fn render_case(case: &Path) -> String {
    let text = std::fs::read_to_string(case)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", case.display()));
    let input = poolkeeper_core::parse_replay(&text)
        .unwrap_or_else(|err| panic!("{} is not a valid replay file: {err}", case.display()));
    let output = poolkeeper_core::run_replay(&input);
    format!("{}\n", serde_json::to_string_pretty(&output).expect("decisions render as JSON"))
}

/// Checks every case of `area` against its committed output (or blesses them). Panics with
/// the list of mismatching cases, after checking them all.
pub fn check_corpus(area: &str, minimum_cases: usize) {
    let cases = corpus_cases(area);
    assert!(
        cases.len() >= minimum_cases,
        "corpus {area} has {} cases, expected at least {minimum_cases}",
        cases.len()
    );
    let bless = std::env::var_os("POOLKEEPER_BLESS").is_some();
    let mut failures = Vec::new();
    for case in &cases {
        let actual = render_case(case);
        let expected_file = expected_path(case);
        if bless {
            std::fs::write(&expected_file, &actual).expect("write expected output");
            continue;
        }
        match std::fs::read_to_string(&expected_file) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{}: decisions differ from {}\n--- expected\n{expected}\n--- actual\n{actual}",
                case.display(),
                expected_file.display()
            )),
            Err(err) => failures.push(format!("{}: no expected output: {err}", case.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} corpus case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
