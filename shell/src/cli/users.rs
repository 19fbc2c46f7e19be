//! `poolkeeper users create|list|suspend|activate|set-quiet-hours`: the people who may call
//! the API. Changes are audited with the command line (`cli`) as the actor.

use std::process::ExitCode;

use chrono::Utc;
use poolkeeper_core::schedule::{parse_quiet_hours, DEFAULT_QUIET_HOURS};

use super::output::{self, or_dash, Column, OutputArgs};
use crate::api::UserJson;
use crate::db::enums::{UserRole, UserStatus};
use crate::store::audit::Actor;
use crate::store::auth::{create_user, AuthError};
use crate::store::users::{list_users, set_quiet_hours, set_status};

#[derive(Debug, clap::Args)]
pub struct UsersArgs {
    /// PostgreSQL URL.
    #[arg(long, env = "POOLKEEPER_DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: UsersCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Create an active user.
    Create(CreateUserArgs),
    /// List users: name, role, status, quiet hours.
    List(OutputArgs),
    /// Suspend a user: their tokens stop working, their workspaces stop and do not autostart.
    Suspend { username: String },
    /// Make a suspended (or dormant) user active again.
    Activate { username: String },
    /// Set a user's quiet hours, the daily time their workspaces may be stopped for a
    /// template's autostop requirement, e.g. 'CRON_TZ=Europe/Berlin 0 2 * * *'.
    SetQuietHours {
        username: String,
        /// A daily cron schedule with one minute and one hour.
        #[arg(required_unless_present = "default")]
        schedule: Option<String>,
        /// Go back to the default quiet hours (midnight UTC).
        #[arg(long, conflicts_with = "schedule")]
        default: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct CreateUserArgs {
    #[arg(long)]
    pub username: String,
    /// owner, template-admin or member.
    #[arg(long, default_value = "member", value_parser = parse_role)]
    pub role: UserRole,
}

fn parse_role(text: &str) -> Result<UserRole, String> {
    text.parse().map_err(|_| "expected owner, template-admin or member".to_owned())
}

const COLUMNS: &[Column<UserJson>] = &[
    ("USERNAME", |u| u.username.clone()),
    ("ROLE", |u| u.role.to_string()),
    ("STATUS", |u| u.status.to_string()),
    ("QUIET HOURS", |u| or_dash(u.quiet_hours_schedule.as_deref())),
    ("ID", |u| u.id.to_string()),
];

/// Unknown users and invalid values are the caller's mistake (exit 2).
fn invalid(err: &AuthError) -> Option<String> {
    match err {
        AuthError::UnknownUser(name) => Some(format!("username: no user named {name:?}")),
        AuthError::UserExists(_) => Some(format!("username: {err}")),
        AuthError::Invalid(_) => Some(err.to_string()),
        AuthError::Store(_) => None,
    }
}

pub fn users(args: &UsersArgs) -> ExitCode {
    let url = match super::database_url(args.database_url.as_deref()) {
        Ok(url) => url,
        Err(code) => return code,
    };
    let actor = Actor::cli();
    let done = match &args.command {
        UsersCommand::Create(create) => super::on_database(
            url,
            async |pool| create_user(pool, &create.username, create.role, chrono::Utc::now()).await,
            invalid,
        )
        .map(|user| {
            println!("created user {} ({}) with role {}", user.username, user.id, user.role)
        }),
        UsersCommand::List(out) => {
            super::on_database(url, async |pool| list_users(pool).await, invalid).map(|users| {
                let users: Vec<UserJson> = users.into_iter().map(UserJson::from).collect();
                output::print(out, &users, COLUMNS);
            })
        }
        UsersCommand::Suspend { username } => status(url, username, UserStatus::Suspended, &actor),
        UsersCommand::Activate { username } => status(url, username, UserStatus::Active, &actor),
        UsersCommand::SetQuietHours { username, schedule, default } => {
            // Parse, then apply: the core's own parser, so the deadline computation reads
            // exactly what is stored.
            let parsed = match (schedule, default) {
                (_, true) | (None, _) => None,
                (Some(text), false) => match parse_quiet_hours(text) {
                    Ok(schedule) => Some(schedule),
                    Err(err) => {
                        eprintln!("error: schedule: {err}");
                        return ExitCode::from(super::EXIT_INVALID_INPUT);
                    }
                },
            };
            super::on_database(
                url,
                async |pool| {
                    set_quiet_hours(pool, username, parsed.as_ref(), &actor, Utc::now()).await
                },
                invalid,
            )
            .map(|user| {
                let shown = user.quiet_hours_schedule.as_deref().unwrap_or(DEFAULT_QUIET_HOURS);
                println!("{} quiet hours: {shown}", user.username);
            })
        }
    };
    done.map_or_else(|code| code, |()| ExitCode::SUCCESS)
}

fn status(url: &str, username: &str, status: UserStatus, actor: &Actor) -> Result<(), ExitCode> {
    super::on_database(
        url,
        async |pool| set_status(pool, username, status, actor, Utc::now()).await,
        invalid,
    )
    .map(|user| println!("{} is {}", user.username, user.status))
}
