//! The audit log: who changed what, when, and how (old/new values). Every entry is written
//! in the same transaction as the change it describes, so a rolled-back change leaves no
//! entry and a committed one always has its entry.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::StoreError;
use crate::db::models::{AuditEntry, NewAuditEntry};
use crate::db::schema::{audit_log, users};
use crate::db::DbPool;

/// Who made a change: a person (API caller), or a part of poolkeeper itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub id: Option<Uuid>,
    pub name: String,
}

impl Actor {
    /// A person, by id and username.
    pub fn user(id: Uuid, username: &str) -> Self {
        Self { id: Some(id), name: username.to_owned() }
    }

    /// The command line run by an operator (no API identity).
    pub fn cli() -> Self {
        Self { id: None, name: "cli".to_owned() }
    }

    /// A daemon loop or the provisioner, by its name.
    pub fn system(name: &str) -> Self {
        Self { id: None, name: name.to_owned() }
    }

    /// The user `id` as an actor, its username read on `conn` (the id alone if it is gone).
    pub(crate) async fn of_user(
        conn: &mut AsyncPgConnection,
        id: Uuid,
    ) -> Result<Self, diesel::result::Error> {
        let name: Option<String> =
            users::table.find(id).select(users::username).first(conn).await.optional()?;
        Ok(Self { id: Some(id), name: name.unwrap_or_else(|| id.to_string()) })
    }
}

/// One change to record: `diff` holds `{"old": .., "new": ..}` or the fields that changed.
pub(crate) struct Change<'a> {
    pub action: &'a str,
    pub resource_type: &'a str,
    pub resource_id: Option<Uuid>,
    pub diff: serde_json::Value,
}

/// Writes the entry on `conn`; call it inside the transaction that makes the change.
pub(crate) async fn record(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    actor: &Actor,
    change: Change<'_>,
) -> Result<(), diesel::result::Error> {
    diesel::insert_into(audit_log::table).values(entry(now, actor, change)).execute(conn).await?;
    Ok(())
}

/// The row of an entry, for a caller that writes it together with its change.
pub(crate) fn entry(now: DateTime<Utc>, actor: &Actor, change: Change<'_>) -> NewAuditEntry {
    NewAuditEntry {
        at: Some(now),
        actor_id: actor.id,
        actor: actor.name.clone(),
        action: change.action.to_owned(),
        resource_type: change.resource_type.to_owned(),
        resource_id: change.resource_id,
        diff: change.diff,
    }
}

/// What `list` returns; every field narrows the result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub resource_type: Option<String>,
    pub resource_id: Option<Uuid>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// At most this many entries (newest first); clamped to 1..=1000.
    pub limit: i64,
}

/// The newest entries matching `filter`, newest first.
pub async fn list(pool: &DbPool, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
    let mut conn = pool.get().await?;
    let mut query = audit_log::table.select(AuditEntry::as_select()).into_boxed();
    if let Some(resource_type) = &filter.resource_type {
        query = query.filter(audit_log::resource_type.eq(resource_type));
    }
    if let Some(resource_id) = filter.resource_id {
        query = query.filter(audit_log::resource_id.eq(resource_id));
    }
    if let Some(actor) = &filter.actor {
        query = query.filter(audit_log::actor.eq(actor));
    }
    if let Some(action) = &filter.action {
        query = query.filter(audit_log::action.eq(action));
    }
    if let Some(since) = filter.since {
        query = query.filter(audit_log::at.ge(since));
    }
    Ok(query
        .order((audit_log::at.desc(), audit_log::id.desc()))
        .limit(filter.limit.clamp(1, 1000))
        .load(&mut conn)
        .await?)
}
