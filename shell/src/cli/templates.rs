//! `poolkeeper templates apply FILE`: declare a template, its version and presets.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::store::templates::{apply, ApplyError};
use crate::templates_file;

#[derive(Debug, clap::Args)]
pub struct TemplatesArgs {
    #[command(subcommand)]
    pub command: TemplatesCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TemplatesCommand {
    /// Validate a templates file (TOML, or JSON if it ends in .json) and apply it: an
    /// unchanged file changes nothing; a changed one becomes a new, active version.
    Apply(ApplyArgs),
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The templates file.
    pub file: PathBuf,
    /// PostgreSQL URL.
    #[arg(long, env = "POOLKEEPER_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

pub fn templates(args: &TemplatesArgs) -> ExitCode {
    match &args.command {
        TemplatesCommand::Apply(args) => apply_file(args),
    }
}

fn apply_file(args: &ApplyArgs) -> ExitCode {
    let text = match std::fs::read_to_string(&args.file) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("error: cannot read {}: {err}", args.file.display());
            return ExitCode::from(super::EXIT_INVALID_INPUT);
        }
    };
    let is_json = args.file.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
    // Parse, then apply: nothing touches the database unless the whole file is valid.
    let parsed =
        if is_json { templates_file::parse_json(&text) } else { templates_file::parse_toml(&text) };
    let spec = match parsed {
        Ok(spec) => spec,
        Err(err) => {
            eprintln!("error: {}: {err}", args.file.display());
            return ExitCode::from(super::EXIT_INVALID_INPUT);
        }
    };
    let applied = super::on_database(
        &args.database_url,
        async |pool| apply(pool, &spec).await,
        |err| match err {
            ApplyError::Invalid(err) => Some(format!("{}: {err}", args.file.display())),
            _ => None,
        },
    );
    match applied {
        Ok(outcome) => {
            println!("{}/{}: {outcome}", spec.organization, spec.name);
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
