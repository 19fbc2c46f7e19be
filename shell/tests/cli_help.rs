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

#[test]
fn run_and_snapshot_read_the_same_reconciler_settings() {
    use clap::Parser;
    use poolkeeper::cli::Command as Sub;
    let flags = [
        "--database-url",
        "postgres://localhost/x",
        "--backoff-interval",
        "5",
        "--backoff-lookback",
        "600",
        "--failure-hard-limit",
        "0",
        "--max-pending-creates",
        "2",
    ];
    let run = Cli::try_parse_from(["poolkeeper", "run"].iter().chain(&flags)).expect("run");
    let snapshot =
        Cli::try_parse_from(["poolkeeper", "snapshot", "--kind", "prebuilds"].iter().chain(&flags))
            .expect("snapshot");
    let (Sub::Run(run), Sub::Snapshot(snapshot)) = (run.command, snapshot.command) else {
        panic!("parsed as other commands");
    };
    let config = run.reconciler.config();
    assert_eq!(config, snapshot.reconciler.config());
    assert_eq!(
        (
            config.backoff_interval_secs,
            config.backoff_lookback_secs,
            config.failure_hard_limit,
            config.max_pending_creates_per_preset
        ),
        (5, 600, 0, 2)
    );
    let refused = Cli::try_parse_from(["poolkeeper", "run", "--max-pending-creates", "many"]);
    assert!(refused.is_err_and(|err| err.to_string().contains("--max-pending-creates")));
}
