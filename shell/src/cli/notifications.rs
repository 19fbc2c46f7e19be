//! `poolkeeper notifications`: the outbox (`list`), its delivery (`dispatch`, `test`) and
//! per-user preferences (`preferences set|list`).

mod delivery;

use std::process::ExitCode;
use std::sync::Arc;

pub use delivery::DeliveryArgs;

use super::output::{self, Column, OutputArgs};
use crate::db::pool::{self, redacted_url, PoolConfig, SessionSettings};
use crate::notify::{Dispatcher, Message, Recipient};
use crate::store::auth::{find_user, AuthError};
use crate::store::delivery::{
    attempts_of, delivery_states, preferences, set_email, set_preferences,
};
use crate::store::notifications::{list, Kind, NotificationFilter};
use crate::store::StoreError;
use crate::telemetry::logging::{self, LogFormat};

#[derive(Debug, clap::Args)]
pub struct NotificationsArgs {
    #[command(subcommand)]
    pub command: NotificationsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum NotificationsCommand {
    /// List notifications with their delivery status and every attempt (kinds:
    /// workspace_dormant, workspace_autodeleted, workspace_autobuild_failed,
    /// workspace_autoupdated, preset_hard_limited, prebuild_resources_replaced).
    List(ListArgs),
    /// Deliver the outbox by the configured methods (what `run` does alongside its loops).
    Dispatch(DispatchArgs),
    /// Send one test message to a user by each configured method.
    Test(TestArgs),
    /// Show or change which kinds a user receives.
    Preferences(PreferencesArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only notifications for this user id.
    #[arg(long)]
    pub user_id: Option<uuid::Uuid>,
    /// Only notifications not yet delivered.
    #[arg(long)]
    pub unsent: bool,
    /// At most this many.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=1000))]
    pub limit: i64,
    #[command(flatten)]
    pub output: OutputArgs,
    /// PostgreSQL URL.
    #[arg(long, env = "POOLKEEPER_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

#[derive(Debug, clap::Args)]
pub struct DispatchArgs {
    /// PostgreSQL URL.
    #[arg(long, env = "POOLKEEPER_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    #[command(flatten)]
    pub delivery: DeliveryArgs,
    /// Deliver what is due now, then exit (retries that come due later are left).
    #[arg(long)]
    pub once: bool,
    #[arg(long, env = "POOLKEEPER_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The user to send to (by name).
    #[arg(long)]
    pub user: String,
    /// PostgreSQL URL.
    #[arg(long, env = "POOLKEEPER_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    #[command(flatten)]
    pub delivery: DeliveryArgs,
}

#[derive(Debug, clap::Args)]
pub struct PreferencesArgs {
    #[command(subcommand)]
    pub command: PreferencesCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PreferencesCommand {
    /// Every kind and whether the user receives it.
    List(PreferencesListArgs),
    /// Switch one kind on or off for a user.
    Set(PreferencesSetArgs),
    /// Set the address a user's notification e-mail goes to ("" clears it).
    Email(PreferencesEmailArgs),
}

#[derive(Debug, clap::Args)]
pub struct PreferencesEmailArgs {
    /// The user (by name).
    #[arg(long)]
    pub user: String,
    /// The address, e.g. alice@example.com; empty for none.
    #[arg(long, value_parser = parse_email)]
    pub email: EmailAddress,
    /// PostgreSQL URL.
    #[arg(long, env = "POOLKEEPER_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

/// An e-mail address checked at the edge, or none.
#[derive(Debug, Clone)]
pub struct EmailAddress(Option<String>);

fn parse_email(text: &str) -> Result<EmailAddress, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(EmailAddress(None));
    }
    let address: lettre::Address =
        text.parse().map_err(|err| format!("{text:?} is not an e-mail address ({err})"))?;
    Ok(EmailAddress(Some(address.to_string())))
}

#[derive(Debug, clap::Args)]
pub struct PreferencesListArgs {
    /// The user (by name).
    #[arg(long)]
    pub user: String,
    /// PostgreSQL URL.
    #[arg(long, env = "POOLKEEPER_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

#[derive(Debug, clap::Args)]
pub struct PreferencesSetArgs {
    /// The user (by name).
    #[arg(long)]
    pub user: String,
    /// The kind (workspace_dormant, preset_hard_limited, ...).
    #[arg(long, value_parser = parse_kind)]
    pub kind: Kind,
    /// true to receive it, false not to.
    #[arg(long, action = clap::ArgAction::Set)]
    pub enabled: bool,
    /// PostgreSQL URL.
    #[arg(long, env = "POOLKEEPER_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

fn parse_kind(text: &str) -> Result<Kind, String> {
    text.parse().map_err(|_| {
        let kinds: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        format!("{text:?} is not a notification kind (one of {})", kinds.join(", "))
    })
}

/// A command's failure: a store error, or input naming no user.
#[derive(Debug, thiserror::Error)]
enum CommandError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("--user: no user named {0:?}")]
    NoUser(String),
}

impl CommandError {
    fn invalid_input(&self) -> Option<String> {
        matches!(self, Self::NoUser(_)).then(|| self.to_string())
    }
}

pub fn notifications(args: &NotificationsArgs) -> ExitCode {
    match &args.command {
        NotificationsCommand::List(args) => list_command(args),
        NotificationsCommand::Dispatch(args) => dispatch_command(args),
        NotificationsCommand::Test(args) => test_command(args),
        NotificationsCommand::Preferences(args) => match &args.command {
            PreferencesCommand::List(args) => preferences_list(args),
            PreferencesCommand::Set(args) => preferences_set(args),
            PreferencesCommand::Email(args) => preferences_email(args),
        },
    }
}

fn list_command(args: &ListArgs) -> ExitCode {
    let filter = NotificationFilter {
        user_id: args.user_id,
        kind: args.kind.clone(),
        unsent: args.unsent,
        limit: args.limit,
    };
    let loaded = super::on_database(
        &args.database_url,
        async |pool| {
            let rows = list(pool, &filter).await?;
            let ids: Vec<_> = rows.iter().map(|r| r.notification.id).collect();
            let states = delivery_states(pool, &ids).await?;
            let attempts = attempts_of(pool, &ids).await?;
            Ok::<_, StoreError>((rows, states, attempts))
        },
        |_| None,
    );
    let (rows, states, attempts) = match loaded {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let rows: Vec<NotificationJson> = rows
        .into_iter()
        .map(|row| {
            let n = row.notification;
            let state = states.iter().find(|s| s.id == n.id);
            let attempts = attempts
                .iter()
                .filter(|a| a.notification_id == n.id)
                .map(|a| AttemptJson {
                    attempt: a.attempt,
                    method: a.method.as_str().to_owned(),
                    at: a.at,
                    outcome: a.outcome.as_str().to_owned(),
                    error: a.error.clone(),
                })
                .collect();
            NotificationJson {
                id: n.id,
                user_id: n.user_id,
                username: row.username,
                kind: n.kind,
                payload: n.payload,
                created_at: n.created_at,
                sent_at: n.sent_at,
                status: state
                    .map_or_else(|| "pending".to_owned(), |s| s.status.as_str().to_owned()),
                next_attempt_at: state.map(|s| s.next_attempt_at),
                attempts,
            }
        })
        .collect();
    output::print(&args.output, &rows, COLUMNS);
    ExitCode::SUCCESS
}

/// A notification as `-o json` prints it, with its delivery state and every attempt.
#[derive(serde::Serialize)]
struct NotificationJson {
    id: uuid::Uuid,
    user_id: uuid::Uuid,
    username: String,
    kind: String,
    payload: serde_json::Value,
    created_at: chrono::DateTime<chrono::Utc>,
    sent_at: Option<chrono::DateTime<chrono::Utc>>,
    status: String,
    next_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
    attempts: Vec<AttemptJson>,
}

#[derive(serde::Serialize)]
struct AttemptJson {
    attempt: i32,
    method: String,
    at: chrono::DateTime<chrono::Utc>,
    outcome: String,
    error: Option<String>,
}

const COLUMNS: &[Column<NotificationJson>] = &[
    ("CREATED", |n| n.created_at.to_rfc3339()),
    ("KIND", |n| n.kind.clone()),
    ("USER", |n| n.username.clone()),
    ("STATUS", |n| n.status.clone()),
    ("SENT", |n| n.sent_at.map_or_else(|| "unsent".to_owned(), |at| at.to_rfc3339())),
    ("ATTEMPTS", |n| n.attempts.len().to_string()),
    ("LAST ATTEMPT", |n| {
        n.attempts.last().map_or_else(
            || "-".to_owned(),
            |a| match &a.error {
                Some(error) => format!("{} {}: {error}", a.method, a.outcome),
                None => format!("{} {}", a.method, a.outcome),
            },
        )
    }),
    ("PAYLOAD", |n| n.payload.to_string()),
];

/// The dispatcher's own small pool, named `poolkeeper-notifications` in pg_stat_activity.
pub(crate) fn pool_config(session: SessionSettings) -> PoolConfig {
    PoolConfig { max_size: 3, session, ..PoolConfig::default() }
}

fn dispatch_command(args: &DispatchArgs) -> ExitCode {
    logging::init(args.log_format);
    let (methods, config) = match (args.delivery.methods(), args.delivery.dispatch_config()) {
        (Ok(methods), Ok(config)) => (methods, config),
        (Err(err), _) | (_, Err(err)) => {
            eprintln!("error: {err}");
            return ExitCode::from(super::EXIT_INVALID_INPUT);
        }
    };
    if methods.is_empty() {
        eprintln!(
            "error: no delivery method: give --notifications-webhook-url or --notifications-smtp-url"
        );
        return ExitCode::from(super::EXIT_INVALID_INPUT);
    }
    let result = super::block_on(async {
        let session = SessionSettings::for_role("notifications");
        let pool = pool::build(&args.database_url, &pool_config(session))?;
        let dispatcher = Dispatcher::new(pool, methods, config);
        if args.once {
            let stats = dispatcher.drain().await?;
            println!(
                "leased {}, sent {}, temporary failures {}, permanent failures {}, inhibited {}",
                stats.leased,
                stats.sent,
                stats.temporary_failures,
                stats.permanent_failures,
                stats.inhibited
            );
            dispatcher.prune().await?;
            return Ok::<_, anyhow::Error>(());
        }
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        });
        #[cfg(unix)]
        {
            let stop = shutdown.clone();
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::spawn(async move {
                terminate.recv().await;
                stop.cancel();
            });
        }
        dispatcher.run(shutdown).await;
        Ok(())
    });
    match result.map_err(anyhow::Error::from).and_then(|r| r) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#} (database {})", redacted_url(&args.database_url));
            ExitCode::FAILURE
        }
    }
}

fn test_command(args: &TestArgs) -> ExitCode {
    let methods = match args.delivery.methods() {
        Ok(methods) if !methods.is_empty() => methods,
        Ok(_) => {
            eprintln!(
                "error: no delivery method: give --notifications-webhook-url or --notifications-smtp-url"
            );
            return ExitCode::from(super::EXIT_INVALID_INPUT);
        }
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(super::EXIT_INVALID_INPUT);
        }
    };
    let user = match super::on_database(
        &args.database_url,
        async |pool| {
            find_user(pool, &args.user)
                .await?
                .ok_or_else(|| CommandError::NoUser(args.user.clone()))
        },
        CommandError::invalid_input,
    ) {
        Ok(user) => user,
        Err(code) => return code,
    };
    let recipient = Recipient {
        id: user.id,
        username: user.username.clone(),
        email: Some(user.email.trim().to_owned()).filter(|e| !e.is_empty()),
    };
    let results = super::block_on(async {
        let mut results = Vec::new();
        for method in &methods {
            let name = method.method().as_str();
            if let Some(why) = method.unreachable(&recipient) {
                results.push((name, Err(why.to_owned())));
                continue;
            }
            let message = Message::test(recipient.clone(), name, chrono::Utc::now());
            results
                .push((name, Arc::clone(method).send(&message).await.map_err(|e| e.to_string())));
        }
        results
    });
    let Ok(results) = results else {
        eprintln!("error: cannot start the async runtime");
        return ExitCode::FAILURE;
    };
    let mut failed = false;
    for (method, result) in results {
        match result {
            Ok(()) => println!("{method}: sent to {}", args.user),
            Err(err) => {
                failed = true;
                println!("{method}: not sent: {err}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn preferences_list(args: &PreferencesListArgs) -> ExitCode {
    let prefs = super::on_database(
        &args.database_url,
        async |pool| {
            let user = find_user(pool, &args.user)
                .await?
                .ok_or_else(|| CommandError::NoUser(args.user.clone()))?;
            Ok::<_, CommandError>(preferences(pool, user.id).await?)
        },
        CommandError::invalid_input,
    );
    match prefs {
        Ok(prefs) => {
            for p in prefs {
                println!("{:<28} {}", p.kind.as_str(), if p.enabled { "on" } else { "off" });
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn preferences_set(args: &PreferencesSetArgs) -> ExitCode {
    let done = super::on_database(
        &args.database_url,
        async |pool| {
            let user = find_user(pool, &args.user)
                .await?
                .ok_or_else(|| CommandError::NoUser(args.user.clone()))?;
            set_preferences(pool, user.id, &[(args.kind, args.enabled)], chrono::Utc::now())
                .await?;
            Ok::<_, CommandError>(())
        },
        CommandError::invalid_input,
    );
    match done {
        Ok(()) => {
            let state = if args.enabled { "on" } else { "off" };
            println!("{} {} for {}", args.kind.as_str(), state, args.user);
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn preferences_email(args: &PreferencesEmailArgs) -> ExitCode {
    let done = super::on_database(
        &args.database_url,
        async |pool| {
            let user = find_user(pool, &args.user)
                .await?
                .ok_or_else(|| CommandError::NoUser(args.user.clone()))?;
            set_email(pool, user.id, args.email.0.as_deref(), chrono::Utc::now()).await?;
            Ok::<_, CommandError>(())
        },
        CommandError::invalid_input,
    );
    match done {
        Ok(()) => {
            match &args.email.0 {
                Some(email) => println!("notification e-mail for {} goes to {email}", args.user),
                None => println!("no notification e-mail for {}", args.user),
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
