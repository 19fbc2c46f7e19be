//! The notification outbox. Rows are written in the same transaction as the change they
//! describe (a rolled-back change notifies no one), and the unique `dedupe_key` turns a
//! repeated event (a retried cycle, a second replica) into a no-op.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{QueryFragment, QueryId};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::StoreError;
use crate::db::enums::{UserRole, UserStatus};
use crate::db::models::{NewNotification, Notification};
use crate::db::schema::{notifications, users};
use crate::db::DbPool;

/// What a notification is about (`notifications.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The lifecycle loop marked a workspace dormant (to its owner).
    WorkspaceDormant,
    /// Autostart moved a workspace to the template's active version (to its owner).
    WorkspaceAutoupdated,
    /// A preset hit its failure hard limit (to template admins, once per preset).
    PresetHardLimited,
    /// Claiming a prebuild replaced some of its resources (to template admins, per claim).
    PrebuildResourcesReplaced,
    /// The lifecycle's auto-delete of a dormant workspace went through (to its owner).
    WorkspaceAutodeleted,
    /// An autostart or autostop build failed (to the workspace's owner, per build).
    WorkspaceAutobuildFailed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WorkspaceDormant => "workspace_dormant",
            Self::WorkspaceAutoupdated => "workspace_autoupdated",
            Self::PresetHardLimited => "preset_hard_limited",
            Self::PrebuildResourcesReplaced => "prebuild_resources_replaced",
            Self::WorkspaceAutodeleted => "workspace_autodeleted",
            Self::WorkspaceAutobuildFailed => "workspace_autobuild_failed",
        }
    }

    /// Every kind, in the order `notifications preferences list` shows them.
    pub const ALL: [Kind; 6] = [
        Self::WorkspaceDormant,
        Self::WorkspaceAutodeleted,
        Self::WorkspaceAutobuildFailed,
        Self::WorkspaceAutoupdated,
        Self::PresetHardLimited,
        Self::PrebuildResourcesReplaced,
    ];
}

impl std::str::FromStr for Kind {
    type Err = crate::db::enums::UnknownVariant;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text).ok_or_else(|| {
            crate::db::enums::UnknownVariant { kind: "notification kind", value: text.to_owned() }
        })
    }
}

/// How often the same (user, kind) may notify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dedupe {
    /// Once per user, kind, subject (a workspace) and UTC day: a flapping workspace never
    /// floods its owner, and a second workspace's news is never lost behind the first's.
    Daily(Uuid),
    /// Once per user, kind and subject (a build): an event that happens once.
    Once(Uuid),
    /// Once per user, kind and episode of a subject's state, named by when it began (a
    /// preset hard-limited again after it recovered is a new episode).
    Episode(Uuid, DateTime<Utc>),
}

/// Queues `kind` for `user_id` unless the same notification is already queued.
/// Returns whether a row was written.
pub(crate) async fn enqueue(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    user_id: Uuid,
    kind: Kind,
    dedupe: Dedupe,
    payload: serde_json::Value,
) -> Result<bool, diesel::result::Error> {
    let written =
        enqueue_statement(notification(now, user_id, kind, dedupe, payload)).execute(conn).await?;
    Ok(written > 0)
}

/// The outbox row for `kind` to `user_id`, its dedupe key scoped by `dedupe`.
pub(crate) fn notification(
    now: DateTime<Utc>,
    user_id: Uuid,
    kind: Kind,
    dedupe: Dedupe,
    payload: serde_json::Value,
) -> NewNotification {
    let scope = match dedupe {
        Dedupe::Daily(subject) => format!("{subject}:{}", now.date_naive()),
        Dedupe::Once(subject) => subject.to_string(),
        Dedupe::Episode(subject, began) => format!("{subject}:{}", began.timestamp_micros()),
    };
    let kind = kind.as_str();
    NewNotification {
        id: Uuid::new_v4(),
        user_id,
        kind: kind.to_owned(),
        dedupe_key: format!("{kind}:{user_id}:{scope}"),
        payload,
        created_at: Some(now),
    }
}

/// The insert that queues `row` unless its dedupe key is already queued; for callers that
/// write it together with other rows in one statement.
pub(crate) fn enqueue_statement(row: NewNotification) -> impl QueryFragment<Pg> + QueryId + Send {
    diesel::insert_into(notifications::table)
        .values(row)
        .on_conflict(notifications::dedupe_key)
        .do_nothing()
}

/// Active people with the template-admin role: they hear about pool trouble.
pub(crate) async fn template_admins(
    conn: &mut AsyncPgConnection,
) -> Result<Vec<Uuid>, diesel::result::Error> {
    users::table
        .filter(users::role.eq(UserRole::TemplateAdmin))
        .filter(users::status.eq(UserStatus::Active))
        .filter(users::is_system.eq(false))
        .order(users::id)
        .select(users::id)
        .load(conn)
        .await
}

/// What `list` returns; every field narrows the result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationFilter {
    pub user_id: Option<Uuid>,
    pub kind: Option<String>,
    /// Only those not yet delivered.
    pub unsent: bool,
    /// At most this many (newest first); clamped to 1..=1000.
    pub limit: i64,
}

/// A notification with its recipient's name.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub notification: Notification,
    pub username: String,
}

/// The newest notifications matching `filter`, newest first.
pub async fn list(pool: &DbPool, filter: &NotificationFilter) -> Result<Vec<Listed>, StoreError> {
    let mut conn = pool.get().await?;
    let mut query = notifications::table
        .inner_join(users::table)
        .select((Notification::as_select(), users::username))
        .into_boxed();
    if let Some(user_id) = filter.user_id {
        query = query.filter(notifications::user_id.eq(user_id));
    }
    if let Some(kind) = &filter.kind {
        query = query.filter(notifications::kind.eq(kind));
    }
    if filter.unsent {
        query = query.filter(notifications::sent_at.is_null());
    }
    let rows: Vec<(Notification, String)> = query
        .order((notifications::created_at.desc(), notifications::id))
        .limit(filter.limit.clamp(1, 1000))
        .load(&mut conn)
        .await?;
    Ok(rows.into_iter().map(|(notification, username)| Listed { notification, username }).collect())
}
