//! Helpers shared by the tests in `tests/` (one crate, compiled once for every test binary;
//! the process tests under `shell/tests` include the few they need with `#[path]`).

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

pub mod cli;
pub mod corpus;
pub mod fault_proxy;
pub mod mutate;
pub mod provisioner_seed;
pub mod rng;
pub mod seed;
pub mod smtp_server;
pub mod webhook_receiver;

/// A log sink for a test's tracing subscriber: every line written is kept, and
/// [`CapturedLog::text`] reads them back (to assert what was, or was not, logged).
#[derive(Clone, Default)]
pub struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLog {
    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut bytes = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
