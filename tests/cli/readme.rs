//! README.md promises two commands; CI must run exactly the test one.

use std::path::Path;

const TEST_COMMAND: &str = "cargo test --workspace --locked";

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

#[test]
fn ci_runs_the_test_command_that_readme_gives() {
    let readme = read("README.md");
    let ci = read(".ci/run");
    assert!(
        readme.contains(&format!("```sh\n{TEST_COMMAND}\n```")),
        "README lacks the test command"
    );
    let ci_commands: Vec<&str> =
        ci.lines().map(str::trim).filter(|l| l.starts_with("cargo ")).collect();
    assert!(
        ci_commands.contains(&TEST_COMMAND),
        ".ci/run does not run {TEST_COMMAND:?}: {ci_commands:?}"
    );
}

#[test]
fn readme_replay_example_exists() {
    let readme = read("README.md");
    for word in
        readme.split_whitespace().filter(|w| w.starts_with("tests/replay/") && w.ends_with(".json"))
    {
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(word).is_file(),
            "README names missing file {word}"
        );
    }
}

/// The README's first command, run as a new user would: from the repository root, with
/// `--exit-after scenario` so it ends once the demo is done. `--release` is dropped unless
/// `POOLKEEPER_LONG=1` (a release build of the workspace would double the suite's time);
/// what this test guards is that `cargo run` from the root finds the binary and the demo
/// completes with the arguments the README gives.
#[test]
fn readme_demo_command_runs_from_the_repository_root() {
    let readme = read("README.md");
    let line = readme
        .lines()
        .find(|line| line.starts_with("cargo run "))
        .expect("README gives no `cargo run` command");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[..2], ["cargo", "run"], "{line}");
    let long = std::env::var_os("POOLKEEPER_LONG").is_some();
    let args: Vec<&str> =
        words[1..].iter().copied().filter(|word| long || *word != "--release").collect();
    let output = std::process::Command::new(env!("CARGO"))
        .args(&args)
        .args(["--exit-after", "scenario"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cannot run cargo");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "`{line}` failed ({}):\n{stderr}", output.status);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("scenario complete"),
        "the demo did not finish its scenario:\n{stdout}"
    );
}
