//! Finding a live template, and a preset of its active version, by name.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::db::schema::{organizations, presets, templates};
use crate::db::DbPool;
use crate::store::StoreError;

/// A template (and optionally a preset of its active version) named in an API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundTemplate {
    pub template_id: Uuid,
    /// `None` when no preset was asked for, or the active version has none of that name.
    pub preset_id: Option<Uuid>,
}

/// The live template `organization/name`, and the preset `preset` of its active version.
pub async fn find_template(
    pool: &DbPool,
    organization: &str,
    name: &str,
    preset: Option<&str>,
) -> Result<Option<FoundTemplate>, StoreError> {
    let mut conn = pool.get().await?;
    let template: Option<(Uuid, Option<Uuid>)> = templates::table
        .inner_join(organizations::table)
        .filter(organizations::name.eq(organization))
        .filter(templates::name.eq(name))
        .filter(templates::deleted.eq(false))
        .select((templates::id, templates::active_version_id))
        .first(&mut conn)
        .await
        .optional()?;
    let Some((template_id, active_version_id)) = template else { return Ok(None) };
    let preset_id = match (preset, active_version_id) {
        (Some(preset), Some(version)) => presets::table
            .filter(presets::template_version_id.eq(version))
            .filter(presets::name.eq(preset))
            .select(presets::id)
            .first(&mut conn)
            .await
            .optional()?,
        _ => None,
    };
    Ok(Some(FoundTemplate { template_id, preset_id }))
}
