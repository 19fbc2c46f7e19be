//! `poolkeeper users create`: people who may call the API.

use std::process::ExitCode;

use crate::db::enums::UserRole;
use crate::db::pool::{self, redacted_url, PoolConfig};
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
    let result = super::templates::block_on(async {
        let pool = pool::connect(&args.database_url, &PoolConfig::default())
            .await
            .map_err(|err| AuthError::Store(err.into()))?;
        create_user(&pool, &args.username, args.role).await
    });
    match result {
        Ok(Ok(user)) => {
            println!("created user {} ({}) with role {}", user.username, user.id, user.role);
            ExitCode::SUCCESS
        }
        Ok(Err(err @ (AuthError::UserExists(_) | AuthError::Invalid(_)))) => {
            eprintln!("error: {err}");
            ExitCode::from(super::EXIT_INVALID_INPUT)
        }
        Ok(Err(err)) => {
            eprintln!("error: {err} (database {})", redacted_url(&args.database_url));
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
