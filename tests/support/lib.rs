//! Helpers shared by the tests in `tests/`.

use proptest::test_runner::{Config, FileFailurePersistence};

/// Proptest configuration for the workspace's property tests: `cases` cases, failures
/// persisted to `proptest-regressions/<name>.txt` at the repository root (proptest's default
/// would scatter them next to each source file).
pub fn proptest_config(name: &'static str, cases: u32) -> Config {
    let path: &'static str = Box::leak(format!("proptest-regressions/{name}.txt").into_boxed_str());
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(path))),
        ..Config::default()
    }
}

pub mod corpus;
