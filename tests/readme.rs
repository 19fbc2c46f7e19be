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
