//! Invalidating a preset: every prebuild it has now expires (rules §4).

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

use crate::db::schema::presets;
use crate::db::DbPool;
use crate::store::audit::{self, Actor, Change};
use crate::store::StoreError;

/// Marks every prebuild of the preset created before `now` as expired (rules §4), audited
/// for `actor`; false when there is no such preset.
pub async fn invalidate_preset(
    pool: &DbPool,
    preset_id: Uuid,
    actor: &Actor,
    now: chrono::DateTime<Utc>,
) -> Result<bool, StoreError> {
    let mut conn = pool.get().await?;
    let found = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            let old: Option<Option<chrono::DateTime<Utc>>> = presets::table
                .find(preset_id)
                .select(presets::invalidated_at)
                .for_update()
                .first(conn)
                .await
                .optional()?;
            let Some(old) = old else { return Ok(false) };
            diesel::update(presets::table.find(preset_id))
                .set(presets::invalidated_at.eq(now))
                .execute(conn)
                .await?;
            let change = Change {
                action: "preset_invalidate",
                resource_type: "preset",
                resource_id: Some(preset_id),
                diff: serde_json::json!({
                    "old": { "invalidated_at": old },
                    "new": { "invalidated_at": now },
                }),
            };
            audit::record(conn, now, actor, change).await?;
            Ok(true)
        })
        .await?;
    Ok(found)
}
