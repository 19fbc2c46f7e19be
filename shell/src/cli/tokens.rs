//! `poolkeeper tokens create`: an API bearer token, printed once.

use std::process::ExitCode;

use chrono::{TimeDelta, Utc};

use crate::store::auth::{create_token, AuthError};

#[derive(Debug, clap::Args)]
pub struct TokensArgs {
    #[command(subcommand)]
    pub command: TokensCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokensCommand {
    /// Create a token for a user and print its secret (it cannot be shown again).
    Create(CreateTokenArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateTokenArgs {
    /// The user's name.
    #[arg(long)]
    pub user: String,
    /// A name for the token (unique per user); generated when absent.
    #[arg(long, default_value = "")]
    pub name: String,
    /// Lifetime in days.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
    /// PostgreSQL URL.
    #[arg(long, env = "POOLKEEPER_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

pub fn tokens(args: &TokensArgs) -> ExitCode {
    let TokensCommand::Create(args) = &args.command;
    let lifetime = TimeDelta::days(i64::from(args.days));
    let created = super::on_database(
        &args.database_url,
        async |pool| create_token(pool, &args.user, &args.name, lifetime, Utc::now()).await,
        |err| {
            matches!(err, AuthError::UnknownUser(_) | AuthError::Invalid(_))
                .then(|| err.to_string())
        },
    );
    match created {
        Ok((secret, expires_at)) => {
            eprintln!("token for {} expires at {}; it is shown only once:", args.user, expires_at);
            println!("{secret}");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
