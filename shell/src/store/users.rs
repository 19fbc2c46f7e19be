//! Administering users: list them, suspend and reactivate them, set their quiet hours. The
//! lifecycle rules read what is written here: `users.status` (a suspended owner's workspaces
//! stop and do not autostart, rules §2) and `users.quiet_hours_schedule` (the max deadline
//! of a build, rules §3; NULL = the default quiet hours).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use poolkeeper_core::schedule::CronSchedule;

use super::audit::{self, Actor, Change};
use super::auth::AuthError;
use crate::db::enums::UserStatus;
use crate::db::models::User;
use crate::db::schema::users;
use crate::db::DbPool;

/// Every person (system users left out), by username.
pub async fn list_users(pool: &DbPool) -> Result<Vec<User>, AuthError> {
    let mut conn = pool.get().await?;
    Ok(users::table
        .filter(users::is_system.eq(false))
        .select(User::as_select())
        .order(users::username)
        .load(&mut conn)
        .await?)
}

/// Sets the status of `username` (suspend: `Suspended`, activate: `Active`), audited for
/// `actor` in the same transaction. Setting the status a user already has writes nothing.
pub async fn set_status(
    pool: &DbPool,
    username: &str,
    status: UserStatus,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<User, AuthError> {
    update_user(pool, username, UserChange::Status(status), actor, now).await
}

/// Sets (or, with `None`, resets to the default) the quiet hours of `username`; the
/// schedule was parsed by the core's `parse_quiet_hours`, so the deadline computation reads
/// exactly what is stored.
pub async fn set_quiet_hours(
    pool: &DbPool,
    username: &str,
    schedule: Option<&CronSchedule>,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<User, AuthError> {
    let change = UserChange::QuietHours(schedule.map(|s| s.source().to_owned()));
    update_user(pool, username, change, actor, now).await
}

enum UserChange {
    Status(UserStatus),
    QuietHours(Option<String>),
}

/// Locks the non-system user `username`, applies `change` and records it, in one
/// transaction; a change to what the row already holds writes nothing.
async fn update_user(
    pool: &DbPool,
    username: &str,
    change: UserChange,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<User, AuthError> {
    let mut conn = pool.get().await?;
    conn.transaction::<_, AuthError, _>(async |conn| {
        let user: User = users::table
            .filter(users::username.eq(username))
            .filter(users::is_system.eq(false))
            .for_update()
            .select(User::as_select())
            .first(conn)
            .await
            .optional()?
            .ok_or_else(|| AuthError::UnknownUser(username.to_owned()))?;
        let (action, updated) = match &change {
            UserChange::Status(status) if *status == user.status => return Ok(user),
            UserChange::QuietHours(text) if *text == user.quiet_hours_schedule => return Ok(user),
            UserChange::Status(status) => {
                let action = match status {
                    UserStatus::Suspended => "user_suspend",
                    UserStatus::Active | UserStatus::Dormant => "user_activate",
                };
                let updated: User = diesel::update(users::table.find(user.id))
                    .set((users::status.eq(status), users::updated_at.eq(now)))
                    .returning(User::as_returning())
                    .get_result(conn)
                    .await?;
                (action, updated)
            }
            UserChange::QuietHours(text) => {
                let updated: User = diesel::update(users::table.find(user.id))
                    .set((users::quiet_hours_schedule.eq(text), users::updated_at.eq(now)))
                    .returning(User::as_returning())
                    .get_result(conn)
                    .await?;
                ("user_quiet_hours", updated)
            }
        };
        let diff = serde_json::json!({
            "old": { "status": user.status, "quiet_hours_schedule": user.quiet_hours_schedule },
            "new": { "status": updated.status, "quiet_hours_schedule": updated.quiet_hours_schedule },
        });
        let change =
            Change { action, resource_type: "user", resource_id: Some(user.id), diff };
        audit::record(conn, now, actor, change).await?;
        Ok(updated)
    })
    .await
}
