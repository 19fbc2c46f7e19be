//! `poolkeeper tokens create|list|revoke`: API bearer tokens. A secret is printed once, at
//! creation; lists never show one. Revocations are audited with `cli` as the actor.

use std::process::ExitCode;

use chrono::{TimeDelta, Utc};
use uuid::Uuid;

use super::output::{self, or_dash, Column, OutputArgs};
use crate::api::ApiTokenJson;
use crate::store::audit::Actor;
use crate::store::auth::{create_token, find_user, AuthError};
use crate::store::tokens::{list_tokens, revoke_token};

#[derive(Debug, clap::Args)]
pub struct TokensArgs {
    /// PostgreSQL URL.
    #[arg(long, env = "POOLKEEPER_DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: TokensCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokensCommand {
    /// Create a token for a user and print its secret (it cannot be shown again).
    Create(CreateTokenArgs),
    /// List tokens (every user's, or one user's): name, owner, expiry, last use.
    List {
        /// Only this user's tokens.
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Revoke a token by id: it stops working at once.
    Revoke { id: Uuid },
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
}

const COLUMNS: &[Column<ApiTokenJson>] = &[
    ("ID", |t| t.id.to_string()),
    ("USER", |t| t.username.clone()),
    ("NAME", |t| t.name.clone()),
    ("EXPIRES", |t| t.expires_at.to_rfc3339()),
    ("LAST USED", |t| or_dash(t.last_used_at.map(|at| at.to_rfc3339()))),
];

/// Unknown users, tokens and invalid values are the caller's mistake (exit 2).
fn invalid(err: &AuthError) -> Option<String> {
    match err {
        AuthError::UnknownUser(name) => Some(format!("user: no user named {name:?}")),
        AuthError::Invalid(_) | AuthError::UserExists(_) => Some(err.to_string()),
        AuthError::Store(_) => None,
    }
}

pub fn tokens(args: &TokensArgs) -> ExitCode {
    let url = match super::database_url(args.database_url.as_deref()) {
        Ok(url) => url,
        Err(code) => return code,
    };
    let done = match &args.command {
        TokensCommand::Create(create) => create_one(url, create),
        TokensCommand::List { user, output } => super::on_database(
            url,
            async |pool| {
                let user_id = match user {
                    Some(name) => Some(
                        find_user(pool, name)
                            .await?
                            .ok_or_else(|| AuthError::UnknownUser(name.clone()))?
                            .id,
                    ),
                    None => None,
                };
                list_tokens(pool, user_id).await
            },
            invalid,
        )
        .map(|tokens| {
            let tokens: Vec<ApiTokenJson> = tokens.into_iter().map(ApiTokenJson::from).collect();
            output::print(output, &tokens, COLUMNS);
        }),
        TokensCommand::Revoke { id } => super::on_database(
            url,
            async |pool| revoke_token(pool, *id, None, &Actor::cli(), Utc::now()).await,
            invalid,
        )
        .and_then(|revoked| match revoked {
            Some(token) => {
                println!("revoked token {} ({} of {})", token.id, token.name, token.username);
                Ok(())
            }
            None => {
                eprintln!("error: id: no token {id}");
                Err(ExitCode::from(super::EXIT_INVALID_INPUT))
            }
        }),
    };
    done.map_or_else(|code| code, |()| ExitCode::SUCCESS)
}

fn create_one(url: &str, args: &CreateTokenArgs) -> Result<(), ExitCode> {
    let lifetime = TimeDelta::days(i64::from(args.days));
    let (secret, expires_at) = super::on_database(
        url,
        async |pool| create_token(pool, &args.user, &args.name, lifetime, Utc::now()).await,
        invalid,
    )?;
    eprintln!("token for {} expires at {}; it is shown only once:", args.user, expires_at);
    println!("{secret}");
    Ok(())
}
