//! The `poolkeeper` command line.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Poolkeeper: the lifecycle executor and prebuild reconciler for cloud development workspaces.
#[derive(Debug, Parser)]
#[command(name = "poolkeeper", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a replay file through the core and print the decisions as JSON.
    Replay(ReplayArgs),
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The replay file (REPLAY.md format), or `-` for stdin.
    pub file: PathBuf,
    /// Pretty-print the output.
    #[arg(long)]
    pub pretty: bool,
}

/// Exit code for invalid input (a bad replay file, a bad flag).
pub const EXIT_INVALID_INPUT: u8 = 2;

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Replay(args) => replay(&args),
    }
}

fn replay(args: &ReplayArgs) -> ExitCode {
    let text = match read_input(&args.file) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("error: cannot read {}: {err}", args.file.display());
            return ExitCode::from(EXIT_INVALID_INPUT);
        }
    };
    let input = match poolkeeper_core::parse_replay(&text) {
        Ok(input) => input,
        Err(err) => {
            eprintln!("error: invalid replay file {}: {err}", args.file.display());
            return ExitCode::from(EXIT_INVALID_INPUT);
        }
    };
    let output = poolkeeper_core::run_replay(&input);
    let rendered = if args.pretty {
        serde_json::to_string_pretty(&output)
    } else {
        serde_json::to_string(&output)
    };
    match rendered {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: cannot render decisions: {err}");
            ExitCode::FAILURE
        }
    }
}

fn read_input(file: &PathBuf) -> std::io::Result<String> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file)
    }
}
