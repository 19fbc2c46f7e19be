//! `poolkeeper notifications list`: the notification outbox, newest first.

use std::process::ExitCode;

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
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
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
    for row in rows {
        let n = &row.notification;
        if args.json {
            let line = serde_json::json!({
                "id": n.id,
                "user_id": n.user_id,
                "username": row.username,
                "kind": n.kind,
                "payload": n.payload,
                "created_at": n.created_at,
                "sent_at": n.sent_at,
            });
            println!("{line}");
        } else {
            let sent = n.sent_at.map_or_else(|| "unsent".to_owned(), |at| format!("sent {at}"));
            println!("{}  {:<28} {:<16} {sent}  {}", n.created_at, n.kind, row.username, n.payload);
        }
    }
    ExitCode::SUCCESS
}
