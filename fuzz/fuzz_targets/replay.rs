//! Any bytes as a replay file: parsed and run through the core, or refused with an error
//! that names a path; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match poolkeeper_core::parse_replay(text) {
        Ok(input) => {
            let output = poolkeeper_core::run_replay(&input);
            serde_json::to_string(&output).expect("decisions serialize");
        }
        Err(err) => assert!(!err.message.is_empty(), "refused without a message: {err}"),
    }
});
