//! `poolkeeper notifications list`: the notification outbox, newest first.

use std::process::ExitCode;

use super::output::{self, Column, OutputArgs};
use crate::store::notifications::{list, NotificationFilter};

#[derive(Debug, clap::Args)]
pub struct NotificationsArgs {
    #[command(subcommand)]
    pub command: NotificationsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum NotificationsCommand {
    /// List queued notifications (workspace_dormant, workspace_autoupdated,
    /// preset_hard_limited, prebuild_resources_replaced).
    List(ListArgs),
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

pub fn notifications(args: &NotificationsArgs) -> ExitCode {
    let NotificationsCommand::List(args) = &args.command;
    let filter = NotificationFilter {
        user_id: args.user_id,
        kind: args.kind.clone(),
        unsent: args.unsent,
        limit: args.limit,
    };
    let rows = match super::on_database(
        &args.database_url,
        async |pool| list(pool, &filter).await,
        |_| None,
    ) {
        Ok(rows) => rows,
        Err(code) => return code,
    };
    let rows: Vec<NotificationJson> = rows
        .into_iter()
        .map(|row| NotificationJson {
            id: row.notification.id,
            user_id: row.notification.user_id,
            username: row.username,
            kind: row.notification.kind,
            payload: row.notification.payload,
            created_at: row.notification.created_at,
            sent_at: row.notification.sent_at,
        })
        .collect();
    output::print(&args.output, &rows, COLUMNS);
    ExitCode::SUCCESS
}

/// A notification as `-o json` prints it.
#[derive(serde::Serialize)]
struct NotificationJson {
    id: uuid::Uuid,
    user_id: uuid::Uuid,
    username: String,
    kind: String,
    payload: serde_json::Value,
    created_at: chrono::DateTime<chrono::Utc>,
    sent_at: Option<chrono::DateTime<chrono::Utc>>,
}

const COLUMNS: &[Column<NotificationJson>] = &[
    ("CREATED", |n| n.created_at.to_rfc3339()),
    ("KIND", |n| n.kind.clone()),
    ("USER", |n| n.username.clone()),
    ("SENT", |n| n.sent_at.map_or_else(|| "unsent".to_owned(), |at| at.to_rfc3339())),
    ("PAYLOAD", |n| n.payload.to_string()),
];
