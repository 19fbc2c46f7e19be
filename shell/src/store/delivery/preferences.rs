//! Per-user notification preferences: a kind a person switched off is not delivered to
//! them (the dispatcher records it as `inhibited`). No row means on.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::db::schema::{notification_preferences, users};
use crate::db::DbPool;
use crate::store::notifications::Kind;
use crate::store::StoreError;

/// Whether `user` receives `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preference {
    pub kind: Kind,
    pub enabled: bool,
}

/// Switches each `(kind, enabled)` of `changes` for `user_id`, all in one statement: a
/// request that sets several kinds sets all of them or none.
pub async fn set_preferences(
    pool: &DbPool,
    user_id: Uuid,
    changes: &[(Kind, bool)],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if changes.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = changes
        .iter()
        .map(|(kind, enabled)| {
            (
                notification_preferences::user_id.eq(user_id),
                notification_preferences::kind.eq(kind.as_str()),
                notification_preferences::enabled.eq(*enabled),
                notification_preferences::updated_at.eq(now),
            )
        })
        .collect();
    let mut conn = pool.get().await?;
    diesel::insert_into(notification_preferences::table)
        .values(rows)
        .on_conflict((notification_preferences::user_id, notification_preferences::kind))
        .do_update()
        .set((
            notification_preferences::enabled.eq(excluded(notification_preferences::enabled)),
            notification_preferences::updated_at.eq(excluded(notification_preferences::updated_at)),
        ))
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// Every kind with whether `user_id` receives it, in [`Kind::ALL`] order.
pub async fn preferences(pool: &DbPool, user_id: Uuid) -> Result<Vec<Preference>, StoreError> {
    let mut conn = pool.get().await?;
    let stored: Vec<(String, bool)> = notification_preferences::table
        .filter(notification_preferences::user_id.eq(user_id))
        .select((notification_preferences::kind, notification_preferences::enabled))
        .load(&mut conn)
        .await?;
    Ok(Kind::ALL
        .into_iter()
        .map(|kind| Preference {
            kind,
            enabled: stored
                .iter()
                .find(|(stored, _)| stored == kind.as_str())
                .is_none_or(|(_, enabled)| *enabled),
        })
        .collect())
}

/// Sets the address notification e-mail goes to (`None` clears it: no e-mail is sent).
/// Returns whether the user exists.
pub async fn set_email(
    pool: &DbPool,
    user_id: Uuid,
    email: Option<&str>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let mut conn = pool.get().await?;
    let updated = diesel::update(users::table.find(user_id))
        .set((users::email.eq(email.unwrap_or("")), users::updated_at.eq(now)))
        .execute(&mut conn)
        .await?;
    Ok(updated == 1)
}
