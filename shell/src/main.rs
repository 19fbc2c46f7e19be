use std::process::ExitCode;

use clap::Parser;
use poolkeeper::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    poolkeeper::cli::run(cli)
}
