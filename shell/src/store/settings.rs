//! The `settings` table: the reconciler's pause switch.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::audit::{self, Actor, Change};
use super::StoreError;
use crate::db::schema::settings;
use crate::db::RECONCILIATION_PAUSED_KEY;

/// Whether the prebuild reconciler is paused. A missing or non-boolean value reads as
/// "not paused": the seeded default.
pub async fn reconciliation_paused(
    conn: &mut diesel_async::AsyncPgConnection,
) -> Result<bool, StoreError> {
    let value: Option<serde_json::Value> = settings::table
        .filter(settings::key.eq(RECONCILIATION_PAUSED_KEY))
        .select(settings::value)
        .first(conn)
        .await
        .optional()?;
    Ok(value.and_then(|v| v.as_bool()).unwrap_or(false))
}

/// Pauses or resumes the reconciler, audited as done from the command line. The
/// `settings` trigger wakes the reconciler loops.
pub async fn set_reconciliation_paused(
    conn: &mut diesel_async::AsyncPgConnection,
    paused: bool,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    set_reconciliation_paused_by(conn, paused, &Actor::cli(), now).await
}

/// [`set_reconciliation_paused`] on behalf of `actor`, with its audit entry in the same
/// transaction (a switch to the value it already has is not a change and is not audited).
pub async fn set_reconciliation_paused_by(
    conn: &mut diesel_async::AsyncPgConnection,
    paused: bool,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    conn.transaction::<_, StoreError, _>(async |conn| {
        let old = reconciliation_paused(conn).await?;
        let value = serde_json::Value::Bool(paused);
        diesel::insert_into(settings::table)
            .values((settings::key.eq(RECONCILIATION_PAUSED_KEY), settings::value.eq(&value)))
            .on_conflict(settings::key)
            .do_update()
            .set((settings::value.eq(&value), settings::updated_at.eq(diesel::dsl::now)))
            .execute(conn)
            .await?;
        if old != paused {
            let change = Change {
                action: if paused { "prebuilds_pause" } else { "prebuilds_resume" },
                resource_type: "settings",
                resource_id: None,
                diff: serde_json::json!({
                    "key": RECONCILIATION_PAUSED_KEY,
                    "old": old,
                    "new": paused,
                }),
            };
            audit::record(conn, now, actor, change).await?;
        }
        Ok(())
    })
    .await
}
