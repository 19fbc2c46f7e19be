//! Any bytes as a templates file, TOML and JSON: a valid spec, or refused with a message;
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poolkeeper::templates_file::{parse_json, parse_toml, FieldError, TemplateSpec};

fn check(result: Result<TemplateSpec, FieldError>) {
    match result {
        Ok(spec) => assert!(!spec.content_hash().is_empty()),
        Err(err) => assert!(!err.message.is_empty(), "refused without a message: {err:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    check(parse_toml(text));
    check(parse_json(text));
});
