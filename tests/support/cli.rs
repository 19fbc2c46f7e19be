//! The `poolkeeper` command line run in-process, as a user would type it.

use std::process::ExitCode;

use clap::Parser;
use poolkeeper::cli::{run, Cli};

/// Runs `poolkeeper ARGS...` on a thread of its own (a command starts its own runtime, which
/// cannot nest inside a test's) and returns its exit code.
pub fn poolkeeper(args: &[&str]) -> ExitCode {
    let args: Vec<String> =
        std::iter::once("poolkeeper").chain(args.iter().copied()).map(str::to_owned).collect();
    std::thread::spawn(move || run(Cli::try_parse_from(args).expect("valid arguments")))
        .join()
        .expect("command thread")
}
