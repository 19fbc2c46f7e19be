//! `poolkeeper replay FILE`: feed a replay file through the pure core.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use super::EXIT_INVALID_INPUT;

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The replay file (see docs/replay-format.md), or `-` for stdin.
    pub file: PathBuf,
    /// Pretty-print the output.
    #[arg(long)]
    pub pretty: bool,
}

/// `poolkeeper replay`: parse, run the core, print the decisions.
pub fn replay(args: &ReplayArgs) -> ExitCode {
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
