//! The `settings` table: the reconciler's pause switch.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

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

/// Pauses or resumes the reconciler. The `settings` trigger wakes the reconciler loops.
pub async fn set_reconciliation_paused(
    conn: &mut diesel_async::AsyncPgConnection,
    paused: bool,
) -> Result<(), StoreError> {
    let value = serde_json::Value::Bool(paused);
    diesel::insert_into(settings::table)
        .values((settings::key.eq(RECONCILIATION_PAUSED_KEY), settings::value.eq(&value)))
        .on_conflict(settings::key)
        .do_update()
        .set((settings::value.eq(&value), settings::updated_at.eq(diesel::dsl::now)))
        .execute(conn)
        .await?;
    Ok(())
}
