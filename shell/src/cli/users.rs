//! `poolkeeper users create`: people who may call the API.

use std::process::ExitCode;

use crate::db::enums::UserRole;
use crate::store::auth::{create_user, AuthError};

#[derive(Debug, clap::Args)]
pub struct UsersArgs {
    #[command(subcommand)]
    pub command: UsersCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Create an active user.
    Create(CreateUserArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateUserArgs {
    #[arg(long)]
    pub username: String,
    /// owner, template-admin or member.
    #[arg(long, default_value = "member", value_parser = parse_role)]
    pub role: UserRole,
    /// PostgreSQL URL.
    #[arg(long, env = "POOLKEEPER_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

fn parse_role(text: &str) -> Result<UserRole, String> {
    text.parse().map_err(|_| "expected owner, template-admin or member".to_owned())
}

pub fn users(args: &UsersArgs) -> ExitCode {
    let UsersCommand::Create(args) = &args.command;
    let created = super::on_database(
        &args.database_url,
        async |pool| create_user(pool, &args.username, args.role).await,
        |err| {
            matches!(err, AuthError::UserExists(_) | AuthError::Invalid(_)).then(|| err.to_string())
        },
    );
    match created {
        Ok(user) => {
            println!("created user {} ({}) with role {}", user.username, user.id, user.role);
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
