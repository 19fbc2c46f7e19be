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

/// Flags that name what one invocation acts on (a user, a workspace, a filter, an output
/// file) or that destroy data: an environment variable there would silently retarget or
/// repeat a command. Everything else is configuration and has a `POOLKEEPER_*` variable.
const PER_INVOCATION_FLAGS: &[&str] = &[
    "migrate --revert-all",
    "replay --pretty",
    "snapshot --kind",
    "snapshot --out",
    "users create --username",
    "users create --role",
    "tokens create --user",
    "tokens create --name",
    "tokens create --days",
    "users list --output",
    "users list --json",
    "tokens list --user",
    "tokens list --output",
    "tokens list --json",
    "templates list --output",
    "templates list --json",
    "templates show --organization",
    "templates show --output",
    "templates show --json",
    "prebuilds status --output",
    "prebuilds status --json",
    "workspaces list --owner",
    "workspaces list --output",
    "workspaces list --json",
    "workspaces create --owner",
    "workspaces create --template",
    "workspaces create --preset",
    "workspaces create --organization",
    "workspaces create --autostart",
    "workspaces create --ttl-secs",
    "workspaces autostart --off",
    "users set-quiet-hours --default",
    "notifications list --kind",
    "notifications list --user-id",
    "notifications list --unsent",
    "notifications list --limit",
    "notifications list --output",
    "notifications list --json",
    "notifications dispatch --once",
    "notifications test --user",
    "notifications preferences list --user",
    "notifications preferences set --user",
    "notifications preferences set --kind",
    "notifications preferences set --enabled",
    "notifications preferences email --user",
    "notifications preferences email --email",
    "audit list --resource-type",
    "audit list --resource-id",
    "audit list --actor",
    "audit list --action",
    "audit list --since",
    "audit list --limit",
    "audit list --output",
    "audit list --json",
];

/// `(command path, flag)` of every long flag without an environment variable, depth first.
fn flags_without_env(command: &clap::Command, path: &str, out: &mut Vec<String>) {
    for arg in command.get_arguments() {
        let (Some(long), false) = (arg.get_long(), arg.is_positional()) else { continue };
        if matches!(long, "help" | "version") || arg.get_env().is_some() {
            continue;
        }
        out.push(format!("{path} --{long}"));
    }
    for sub in command.get_subcommands() {
        let path = format!("{path} {}", sub.get_name()).trim().to_owned();
        flags_without_env(sub, &path, out);
    }
}

#[test]
fn every_configuration_flag_has_an_environment_variable() {
    let mut command = Cli::command();
    command.build();
    let mut missing = Vec::new();
    flags_without_env(&command, "", &mut missing);
    let unexpected: Vec<_> =
        missing.iter().filter(|flag| !PER_INVOCATION_FLAGS.contains(&flag.as_str())).collect();
    assert!(unexpected.is_empty(), "flags without an environment variable: {unexpected:#?}");
    let stale: Vec<_> = PER_INVOCATION_FLAGS
        .iter()
        .filter(|flag| !missing.contains(&(**flag).to_owned()))
        .collect();
    assert!(stale.is_empty(), "listed as per-invocation but gone or with a variable: {stale:?}");

    // Every variable is POOLKEEPER_*, and one name never means two different flags.
    let mut by_env = std::collections::BTreeMap::new();
    let mut stack = vec![command];
    while let Some(command) = stack.pop() {
        for arg in command.get_arguments() {
            let Some(env) = arg.get_env() else { continue };
            let env = env.to_string_lossy().into_owned();
            assert!(env.starts_with("POOLKEEPER_"), "{env}");
            let long = arg.get_long().unwrap_or_default().to_owned();
            let previous = by_env.insert(env.clone(), long.clone());
            assert!(previous.is_none_or(|p| p == long), "{env} names --{long} and another flag");
        }
        stack.extend(command.get_subcommands().cloned());
    }
    println!(
        "cli env: {} variables, {} per-invocation flags, violations: 0",
        by_env.len(),
        missing.len()
    );
}
