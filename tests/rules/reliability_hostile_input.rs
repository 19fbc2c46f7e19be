//! Bounded in-test fuzzing of the two file parsers users feed by hand: the templates file
//! (TOML and JSON) and the replay file. Arbitrary bytes, byte-level corruption and structural
//! mutation of the shipped example never panic; a refusal always says what is wrong, a
//! structural mutation of a valid file is refused at a named field, and so is a corrupted file
//! that is still readable TOML or JSON (an unreadable one is refused at a line and column). (The cargo-fuzz targets
//! in fuzz/ run the same parsers without a bound.)

use poolkeeper::templates_file::{from_value, parse_json, parse_toml, toml_value, FieldError};
use poolkeeper_tests::mutate::{count_scalars, hostile_scalar, replace_scalar, splice};
use poolkeeper_tests::proptest_config;
use proptest::prelude::*;
use serde_json::Value;

const EXAMPLE: &str = include_str!("../../examples/templates.toml");

/// Text that a templates file's fields refuse: bad schedules and time zones.
const TEMPLATE_TEXTS: &[&str] =
    &["CRON_TZ=Mars/Olympus * * * * *", "*/0 * * * *", "* 25-3 * * 8", "Not/AZone"];

fn example_json() -> Value {
    toml_value(EXAMPLE).expect("the example is valid TOML")
}

/// Parsed, or refused with a message; the content hash of a valid file is computable.
fn check(
    result: Result<poolkeeper::templates_file::TemplateSpec, FieldError>,
) -> Result<(), TestCaseError> {
    match result {
        Ok(spec) => prop_assert!(!spec.content_hash().is_empty()),
        Err(err) => prop_assert!(!err.message.is_empty(), "{err:?}"),
    }
    Ok(())
}

/// A refusal of a corrupted file says where: at a named field when the document is still
/// readable TOML or JSON, at a line and column when it is not.
fn check_located(
    text: &str,
    readable: bool,
    result: Result<poolkeeper::templates_file::TemplateSpec, FieldError>,
) -> Result<(), TestCaseError> {
    if let Err(err) = &result {
        if readable {
            prop_assert!(!err.field.is_empty(), "refused without a field: {err}\n{text}");
        } else {
            prop_assert!(err.message.contains("line"), "refused without a location: {err}\n{text}");
        }
    }
    check(result)
}

proptest! {
    #![proptest_config(proptest_config("reliability_hostile_input", 500))]

    /// Arbitrary bytes as a templates file, TOML or JSON, and as a replay file.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        check(parse_toml(&text))?;
        check(parse_json(&text))?;
        if let Err(err) = poolkeeper_core::parse_replay(&text) {
            prop_assert!(!err.message.is_empty(), "{err}");
        }
    }

    /// Byte-level corruption of the example templates file (TOML, and the same as JSON).
    #[test]
    fn corrupted_templates_files_never_panic(
        at in any::<prop::sample::Index>(),
        cut in 0usize..24,
        garbage in prop_oneof![".{0,8}", Just("\n[[presets]]\n".to_owned()), Just("=".to_owned()), Just("\"".to_owned())],
    ) {
        let toml_text = splice(EXAMPLE, at, cut, &garbage);
        check_located(&toml_text, toml_value(&toml_text).is_ok(), parse_toml(&toml_text))?;
        let json_text = splice(&example_json().to_string(), at, cut, &garbage);
        let readable = serde_json::from_str::<Value>(&json_text).is_ok();
        check_located(&json_text, readable, parse_json(&json_text))?;
    }

    /// Lines of the example dropped or repeated.
    #[test]
    fn shuffled_lines_never_panic(ops in prop::collection::vec((any::<prop::sample::Index>(), any::<bool>()), 1..6)) {
        let mut lines: Vec<&str> = EXAMPLE.lines().collect();
        for (at, repeat) in ops {
            let i = at.index(lines.len().max(1)).min(lines.len().saturating_sub(1));
            if lines.is_empty() {
                break;
            }
            if repeat { lines.insert(i, lines[i]) } else { lines.remove(i); }
        }
        let text = lines.join("\n");
        check_located(&text, toml_value(&text).is_ok(), parse_toml(&text))?;
    }

    /// Any scalar of the example replaced by a hostile value: valid, or refused at a field.
    #[test]
    fn replacing_any_scalar_is_refused_at_a_field(
        pick in any::<prop::sample::Index>(),
        replacement in hostile_scalar(TEMPLATE_TEXTS),
    ) {
        let mut document = example_json();
        let mut n = pick.index(count_scalars(&document));
        let path = replace_scalar(&mut document, &mut n, &replacement);
        prop_assert!(path.is_some());
        let result = from_value(document.clone());
        if let Err(err) = &result {
            prop_assert!(!err.field.is_empty(), "{path:?} = {replacement}: refused without a field: {err}");
        }
        check(result)?;
        check(parse_json(&document.to_string()))?;
    }
}
