//! `poolkeeper audit list`: the audit log, newest first.

use std::process::ExitCode;

use chrono::{DateTime, Utc};

use super::output::{self, Column, OutputArgs};
use crate::api::AuditJson;
use crate::store::audit::{list, AuditFilter};

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// List audit entries: who changed what, when, with the old and new values.
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this resource type (workspace, preset, template, settings, user, api_token,
    /// workspace_agent).
    #[arg(long)]
    pub resource_type: Option<String>,
    /// Only this resource.
    #[arg(long)]
    pub resource_id: Option<uuid::Uuid>,
    /// Only this actor (a username, or lifecycle, prebuilds, provisioner, cli).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only this action (e.g. workspace_claim, lifecycle, preset_status).
    #[arg(long)]
    pub action: Option<String>,
    /// Only entries at or after this RFC 3339 instant.
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
    /// At most this many.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=1000))]
    pub limit: i64,
    #[command(flatten)]
    pub output: OutputArgs,
    /// PostgreSQL URL.
    #[arg(long, env = "POOLKEEPER_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

pub fn audit(args: &AuditArgs) -> ExitCode {
    let AuditCommand::List(args) = &args.command;
    let filter = AuditFilter {
        resource_type: args.resource_type.clone(),
        resource_id: args.resource_id,
        actor: args.actor.clone(),
        action: args.action.clone(),
        since: args.since,
        limit: args.limit,
    };
    let entries = match super::on_database(
        &args.database_url,
        async |pool| list(pool, &filter).await,
        |_| None,
    ) {
        Ok(entries) => entries,
        Err(code) => return code,
    };
    let entries: Vec<AuditJson> = entries.into_iter().map(AuditJson::from).collect();
    output::print(&args.output, &entries, COLUMNS);
    ExitCode::SUCCESS
}

const COLUMNS: &[Column<AuditJson>] = &[
    ("AT", |e| e.at.to_rfc3339()),
    ("ACTOR", |e| e.actor.clone()),
    ("ACTION", |e| e.action.clone()),
    ("RESOURCE", |e| {
        format!(
            "{}:{}",
            e.resource_type,
            e.resource_id.map_or_else(String::new, |id| id.to_string())
        )
    }),
    ("DIFF", |e| e.diff.to_string()),
];
