//! `poolkeeper replay` as users run it: the corpus through the real binary, and the exit code
//! and message for invalid files.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn poolkeeper(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_poolkeeper"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn poolkeeper");
    if let Some(text) = stdin {
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wait for poolkeeper")
}

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/replay")
}

#[test]
fn replay_prints_the_committed_decisions_for_every_corpus_file() {
    let mut checked = 0;
    for area in std::fs::read_dir(corpus_root()).expect("corpus root") {
        let area = area.expect("area").path();
        for entry in std::fs::read_dir(&area).expect("area dir") {
            let case = entry.expect("case").path();
            let name = case.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            if !name.ends_with(".json") || name.ends_with(".expected.json") {
                continue;
            }
            let expected_file = case.with_file_name(name.replace(".json", ".expected.json"));
            let expected = std::fs::read_to_string(&expected_file)
                .unwrap_or_else(|err| panic!("{}: {err}", expected_file.display()));
            let output = poolkeeper(&["replay", "--pretty", case.to_str().expect("utf-8")], None);
            assert!(output.status.success(), "{}: {:?}", case.display(), output);
            assert_eq!(String::from_utf8_lossy(&output.stdout), expected, "{}", case.display());
            checked += 1;
        }
    }
    assert!(checked > 0, "no corpus files found");
}

const MINIMAL: &str = r#"{"format":"poolkeeper.replay/v1","now":"2025-06-02T09:00:00Z"}"#;

#[test]
fn replay_reads_stdin_and_prints_the_output_envelope() {
    let output = poolkeeper(&["replay", "-"], Some(MINIMAL));
    assert!(output.status.success(), "{output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json output");
    assert_eq!(json["format"], "poolkeeper.decisions/v1");
}

fn assert_rejected(input: &str, expected_path: &str) {
    let output = poolkeeper(&["replay", "-"], Some(input));
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(expected_path), "stderr {stderr:?} should name {expected_path}");
}

#[test]
fn replay_rejects_an_unknown_field_with_its_path() {
    assert_rejected(
        r#"{"format":"poolkeeper.replay/v1","now":"2025-06-02T09:00:00Z",
            "lifecycle":{"workspaces":[],"extra":1}}"#,
        "lifecycle.extra",
    );
}

#[test]
fn replay_rejects_a_bad_time_with_its_path() {
    assert_rejected(r#"{"format":"poolkeeper.replay/v1","now":"yesterday"}"#, "now");
}

#[test]
fn replay_rejects_a_bad_uuid_with_its_path() {
    assert_rejected(
        r#"{"format":"poolkeeper.replay/v1","now":"2025-06-02T09:00:00Z",
            "prebuilds":{"config":{"backoff_interval_secs":60,"backoff_lookback_secs":3600,
            "failure_hard_limit":3},"presets":[],"running":[{"workspace_id":"not-a-uuid",
            "preset_id":"00000000-0000-0000-0000-000000000001",
            "template_version_id":"00000000-0000-0000-0000-000000000001",
            "created_at":"2025-06-02T09:00:00Z","ready":true}],"in_progress":[],"recent_builds":[]}}"#,
        "prebuilds.running[0].workspace_id",
    );
}

#[test]
fn replay_rejects_a_negative_count_with_its_path() {
    assert_rejected(
        r#"{"format":"poolkeeper.replay/v1","now":"2025-06-02T09:00:00Z",
            "prebuilds":{"config":{"backoff_interval_secs":60,"backoff_lookback_secs":3600,
            "failure_hard_limit":-3},"presets":[],"running":[],"in_progress":[],"recent_builds":[]}}"#,
        "prebuilds.config.failure_hard_limit",
    );
}

#[test]
fn replay_rejects_a_wrong_format_tag() {
    assert_rejected(r#"{"format":"poolkeeper.replay/v2","now":"2025-06-02T09:00:00Z"}"#, "format");
}

#[test]
fn replay_rejects_a_missing_file_with_exit_2() {
    let output = poolkeeper(&["replay", "does-not-exist/poolkeeper-case.json"], None);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}
