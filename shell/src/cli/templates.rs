//! `poolkeeper templates apply|list|show`: declare a template, its version and presets from
//! a file; list the live templates; show one with its presets.

use std::path::PathBuf;
use std::process::ExitCode;

use super::output::{self, or_dash, Column, Format, OutputArgs};
use crate::store::template_views::{
    list_templates, show_template, PresetDetail, TemplateDetail, TemplateSummary,
};
use crate::store::templates::{apply, ApplyError};
use crate::templates_file;

#[derive(Debug, clap::Args)]
pub struct TemplatesArgs {
    /// PostgreSQL URL.
    #[arg(long, env = "POOLKEEPER_DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: TemplatesCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TemplatesCommand {
    /// Validate a templates file (TOML, or JSON if it ends in .json) and apply it: an
    /// unchanged file changes nothing; a changed one becomes a new, active version.
    Apply(ApplyArgs),
    /// List the live templates: active version, presets, desired prebuilds.
    List(OutputArgs),
    /// Show a template: its lifecycle settings and its active version's presets.
    Show {
        /// The template's name.
        name: String,
        #[arg(long, default_value = crate::db::DEFAULT_ORGANIZATION_NAME)]
        organization: String,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The templates file.
    pub file: PathBuf,
}

const COLUMNS: &[Column<TemplateSummary>] = &[
    ("ORGANIZATION", |t| t.organization.clone()),
    ("NAME", |t| t.name.clone()),
    ("VERSION", |t| or_dash(t.active_version.as_deref())),
    ("PRESETS", |t| t.presets.to_string()),
    ("DESIRED", |t| t.desired_instances.to_string()),
    ("DEPRECATED", |t| or_dash(t.deprecation_message.as_deref())),
];

const PRESET_COLUMNS: &[Column<PresetDetail>] = &[
    ("PRESET", |p| p.name.clone()),
    ("DESIRED", |p| or_dash(p.desired_instances)),
    ("SCHEDULES", |p| p.schedules.len().to_string()),
    ("STATUS", |p| p.prebuild_status.clone()),
    ("EXPIRES AFTER", |p| format!("{}s", p.expiration_ttl_secs)),
    ("ID", |p| p.id.to_string()),
];

pub fn templates(args: &TemplatesArgs) -> ExitCode {
    let url = match super::database_url(args.database_url.as_deref()) {
        Ok(url) => url,
        Err(code) => return code,
    };
    match &args.command {
        TemplatesCommand::Apply(apply) => apply_file(url, apply),
        TemplatesCommand::List(out) => {
            match super::on_database(url, async |pool| list_templates(pool).await, |_| None) {
                Ok(templates) => {
                    output::print(out, &templates, COLUMNS);
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
        TemplatesCommand::Show { name, organization, output } => {
            let found = super::on_database(
                url,
                async |pool| show_template(pool, organization, name).await,
                |_| None,
            );
            match found {
                Ok(Some(detail)) => {
                    print_detail(output, &detail);
                    ExitCode::SUCCESS
                }
                Ok(None) => {
                    eprintln!("error: name: no live template {organization}/{name}");
                    ExitCode::from(super::EXIT_INVALID_INPUT)
                }
                Err(code) => code,
            }
        }
    }
}

fn print_detail(out: &OutputArgs, t: &TemplateDetail) {
    if out.format() == Format::Json {
        output::print(out, std::slice::from_ref(t), &[]);
        return;
    }
    println!("template          {}/{} ({})", t.organization, t.name, t.id);
    let version = t.active_version.as_ref();
    println!("active version    {}", or_dash(version.map(|v| format!("{} ({})", v.name, v.id))));
    println!("default ttl       {}s", t.default_ttl_secs);
    println!("activity bump     {}s", t.activity_bump_secs);
    println!("autostart days    {}", t.autostart_days.join(","));
    println!(
        "autostop on       {} (every {} week(s))",
        or_dash(Some(t.autostop_requirement_days.join(",")).filter(|d| !d.is_empty())),
        t.autostop_requirement_weeks
    );
    println!("user autostart    {}", t.user_autostart_enabled);
    println!("user autostop     {}", t.user_autostop_enabled);
    println!("failure ttl       {}s", t.failure_ttl_secs);
    println!("dormant after     {}s", t.time_til_dormant_secs);
    println!("delete dormant    {}s", t.time_til_dormant_autodelete_secs);
    if let Some(message) = &t.deprecation_message {
        println!("deprecated        {message}");
    }
    println!();
    let presets = version.map_or(&[][..], |v| v.presets.as_slice());
    print!("{}", output::render(Format::Table, presets, PRESET_COLUMNS));
}

fn apply_file(url: &str, args: &ApplyArgs) -> ExitCode {
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
        url,
        async |pool| apply(pool, &spec, chrono::Utc::now()).await,
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
