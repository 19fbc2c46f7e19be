//! `poolkeeper workspaces ...`: what the HTTP API does to workspaces, from the command line, by
//! the same store functions (audited with actor `cli`).

use std::collections::BTreeMap;
use std::process::ExitCode;

use chrono::Utc;
use poolkeeper_core::schedule::parse_autostart;
use uuid::Uuid;

use super::output::{self, or_dash, Column, OutputArgs};
use crate::api::WorkspaceJson;
use crate::db::enums::Transition;
use crate::db::pool::{self, redacted_url, DbPool, PoolConfig};
use crate::store::audit::Actor;
use crate::store::auth::find_user;
use crate::store::claim::{claim_or_create, ClaimRequest};
use crate::store::templates::find_template;
use crate::store::workspace_page::{list_page, PageRequest};
use crate::store::workspaces;

/// Workspaces read per query by `workspaces list`.
const LIST_PAGE: i64 = 500;

const COLUMNS: &[Column<WorkspaceJson>] = &[
    ("ID", |w| w.id.to_string()),
    ("NAME", |w| w.name.clone()),
    ("OWNER", |w| if w.prebuilt { "(prebuild)".to_owned() } else { w.owner_id.to_string() }),
    ("BUILD", |w| or_dash(w.latest_build.as_ref().map(|b| b.transition))),
    ("STATUS", |w| or_dash(w.latest_build.as_ref().and_then(|b| b.status))),
    ("TTL", |w| format!("{}s", w.ttl_secs)),
    ("AUTOSTART", |w| or_dash(w.autostart_schedule.as_deref())),
];

/// Longest TTL accepted (as by the API): 30 days.
const MAX_TTL_SECS: i64 = 30 * 24 * 3600;

#[derive(Debug, clap::Args)]
pub struct WorkspacesArgs {
    #[arg(long, env = "POOLKEEPER_DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: WorkspacesCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum WorkspacesCommand {
    /// List live workspaces (all, or one owner's).
    List {
        /// Only this user's workspaces.
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Create a workspace for a user: claims a ready prebuild of the preset when there is one,
    /// otherwise builds a fresh workspace.
    Create {
        /// The workspace's name.
        name: String,
        /// The user who will own it.
        #[arg(long)]
        owner: String,
        /// The template's name.
        #[arg(long)]
        template: String,
        /// The preset of the template's active version to claim from.
        #[arg(long)]
        preset: Option<String>,
        #[arg(long, default_value = crate::db::DEFAULT_ORGANIZATION_NAME)]
        organization: String,
        /// Autostart schedule, e.g. 'CRON_TZ=Europe/Berlin 30 8 * * 1-5'.
        #[arg(long)]
        autostart: Option<String>,
        /// Time to live after a start, in seconds (default: the template's).
        #[arg(long)]
        ttl_secs: Option<i64>,
    },
    /// Queue a start build (on the owner's behalf).
    Start { id: Uuid },
    /// Queue a stop build (on the owner's behalf).
    Stop { id: Uuid },
    /// Queue a delete build (on the owner's behalf).
    Delete { id: Uuid },
    /// Set the autostart schedule, or turn autostart off with --off.
    Autostart {
        id: Uuid,
        #[arg(required_unless_present = "off")]
        schedule: Option<String>,
        #[arg(long, conflicts_with = "schedule")]
        off: bool,
    },
    /// Set the time to live after a start, in seconds (0 = none).
    Ttl { id: Uuid, secs: i64 },
}

pub fn workspaces(args: &WorkspacesArgs) -> ExitCode {
    let Some(url) = args.database_url.as_deref() else {
        eprintln!("error: --database-url or POOLKEEPER_DATABASE_URL is required");
        return ExitCode::from(super::EXIT_INVALID_INPUT);
    };
    let result = super::block_on(async {
        let pool = pool::build(url, &PoolConfig { max_size: 2, ..PoolConfig::default() })?;
        execute(&pool, &args.command).await
    });
    match result.map_err(anyhow::Error::from).and_then(|inner| inner) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => match invalid_input(&err) {
            Some(message) => {
                eprintln!("error: {message}");
                ExitCode::from(super::EXIT_INVALID_INPUT)
            }
            None => {
                eprintln!("error: {err:#} (database {})", redacted_url(url));
                ExitCode::FAILURE
            }
        },
    }
}

async fn execute(pool: &DbPool, command: &WorkspacesCommand) -> anyhow::Result<()> {
    let actor = Actor::cli();
    let now = Utc::now();
    match command {
        WorkspacesCommand::List { owner, output } => {
            let owner = match owner {
                Some(name) => Some(user_id(pool, name).await?),
                None => None,
            };
            // Page through the listing: each page is one query, whatever its size.
            let mut shown: Vec<WorkspaceJson> = Vec::new();
            loop {
                let after = shown.last().map(|w| w.id);
                let page = list_page(pool, PageRequest { owner, after, limit: LIST_PAGE }).await?;
                let done = page.len() < LIST_PAGE as usize;
                shown.extend(page.into_iter().map(WorkspaceJson::from_view));
                if done {
                    break;
                }
            }
            output::print(output, &shown, COLUMNS);
        }
        WorkspacesCommand::Create {
            name,
            owner,
            template,
            preset,
            organization,
            autostart,
            ttl_secs,
        } => {
            let user_id = user_id(pool, owner).await?;
            let found =
                find_template(pool, organization, template, preset.as_deref()).await?.ok_or_else(
                    || invalid(format!("template: no live template {organization}/{template}")),
                )?;
            if preset.is_some() && found.preset_id.is_none() {
                return Err(invalid("preset: no such preset in the template's active version"));
            }
            let autostart_schedule = autostart
                .as_deref()
                .map(parse_autostart)
                .transpose()
                .map_err(|err| invalid(format!("autostart: {err}")))?;
            if let Some(ttl) = ttl_secs {
                check_ttl(*ttl)?;
            }
            let request = ClaimRequest {
                user_id,
                template_id: found.template_id,
                preset_id: found.preset_id,
                name: name.clone(),
                autostart_schedule,
                ttl_secs: *ttl_secs,
                parameters: BTreeMap::new(),
            };
            let outcome = claim_or_create(pool, now, &request).await?;
            let how = if outcome.claimed { "prebuild claimed" } else { "building fresh" };
            println!("{} {} ({how})", outcome.workspace.id, outcome.workspace.name);
        }
        WorkspacesCommand::Start { id } => build(pool, *id, Transition::Start).await?,
        WorkspacesCommand::Stop { id } => build(pool, *id, Transition::Stop).await?,
        WorkspacesCommand::Delete { id } => build(pool, *id, Transition::Delete).await?,
        WorkspacesCommand::Autostart { id, schedule, off } => {
            let schedule = match (schedule, off) {
                (_, true) | (None, _) => None,
                (Some(text), false) => {
                    Some(parse_autostart(text).map_err(|err| invalid(format!("schedule: {err}")))?)
                }
            };
            let workspace =
                workspaces::set_autostart(pool, *id, schedule.as_ref(), &actor, now).await?;
            println!(
                "{} autostart {}",
                workspace.id,
                workspace.autostart_schedule.as_deref().unwrap_or("off")
            );
        }
        WorkspacesCommand::Ttl { id, secs } => {
            check_ttl(*secs)?;
            let workspace = workspaces::set_ttl(pool, *id, *secs, &actor, now).await?;
            println!("{} ttl {}s", workspace.id, workspace.ttl_secs);
        }
    }
    Ok(())
}

/// A value the user gave that cannot be used (exit 2, naming the field).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct InvalidInput(String);

fn invalid(message: impl Into<String>) -> anyhow::Error {
    InvalidInput(message.into()).into()
}

/// What is wrong with the input, when `err` is bad input: a refused value, or a workspace
/// id that names no live workspace.
fn invalid_input(err: &anyhow::Error) -> Option<String> {
    if let Some(InvalidInput(message)) = err.downcast_ref::<InvalidInput>() {
        return Some(message.clone());
    }
    match err.downcast_ref::<workspaces::WorkspaceError>() {
        Some(workspaces::WorkspaceError::NotFound) => Some("id: no live workspace".to_owned()),
        _ => None,
    }
}

async fn user_id(pool: &DbPool, username: &str) -> anyhow::Result<Uuid> {
    let user = find_user(pool, username).await?;
    Ok(user.ok_or_else(|| invalid(format!("owner: no user named {username:?}")))?.id)
}

fn check_ttl(ttl: i64) -> anyhow::Result<()> {
    if !(0..=MAX_TTL_SECS).contains(&ttl) {
        return Err(invalid(format!(
            "ttl: must be between 0 and {MAX_TTL_SECS} seconds (30 days)"
        )));
    }
    Ok(())
}

/// Queues a build on the owner's behalf (a build's initiator is a person); the audit entry
/// names the command line as the actor.
async fn build(pool: &DbPool, id: Uuid, transition: Transition) -> anyhow::Result<()> {
    let owner = workspaces::get(pool, id).await?.workspace.owner_id;
    let actor = Actor { id: Some(owner), name: Actor::cli().name };
    let build = workspaces::transition(pool, id, transition, &actor, Utc::now()).await?;
    println!("{id} {transition} build {} queued (job {})", build.build_number, build.job_id);
    Ok(())
}
