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

/// True, with the reason printed, when the `terraform` binary is not on PATH: the tests of
/// the real terraform backend are skipped then (and only then).
pub fn skip_without_terraform() -> bool {
    let available = std::process::Command::new("terraform")
        .arg("version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !available {
        eprintln!("skipped: `terraform` is not on PATH");
    }
    !available
}

pub mod corpus;
pub mod mutate;
