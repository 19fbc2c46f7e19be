//! Every command of the CLI has `--help`: the clap definition is consistent, and the binary
//! answers `--help` for each command and subcommand of that definition, exit 0.

use std::process::Command;

use clap::CommandFactory;
use poolkeeper::cli::Cli;

/// Paths of every subcommand, depth first: `["run"]`, `["prebuilds", "pause"]`, ...
fn command_paths(command: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
    for sub in command.get_subcommands() {
        let mut path = prefix.to_vec();
        path.push(sub.get_name().to_owned());
        out.push(path.clone());
        command_paths(sub, &path, out);
    }
}

#[test]
fn clap_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn every_command_answers_help() {
    let mut paths = vec![Vec::new()];
    command_paths(&Cli::command(), &[], &mut paths);
    assert!(paths.len() > 10, "the command tree: {paths:?}");
    for path in &paths {
        let output = Command::new(env!("CARGO_BIN_EXE_poolkeeper"))
            .args(path)
            .arg("--help")
            .env_remove("POOLKEEPER_DATABASE_URL")
            .output()
            .expect("run poolkeeper");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let usage = format!(
            "Usage: {}",
            ["poolkeeper".to_owned()].iter().chain(path).cloned().collect::<Vec<_>>().join(" ")
        );
        assert!(
            output.status.success(),
            "poolkeeper {} --help: {}\n{}",
            path.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains(&usage),
            "poolkeeper {} --help lacks {usage:?}:\n{stdout}",
            path.join(" ")
        );
    }
    println!("cli help: {} commands answer --help, violations: 0", paths.len());
}
