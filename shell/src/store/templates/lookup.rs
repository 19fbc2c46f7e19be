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
/// One statement: the preset is joined on, not read after the template.
pub async fn find_template(
    pool: &DbPool,
    organization: &str,
    name: &str,
    preset: Option<&str>,
) -> Result<Option<FoundTemplate>, StoreError> {
    let mut conn = pool.get().await?;
    // With no preset asked for, the join's `name = NULL` matches none.
    let found: Option<(Uuid, Option<Uuid>)> = templates::table
        .inner_join(organizations::table)
        .left_join(
            presets::table.on(presets::template_version_id
                .nullable()
                .eq(templates::active_version_id)
                .and(presets::name.nullable().eq(preset))),
        )
        .filter(organizations::name.eq(organization))
        .filter(templates::name.eq(name))
        .filter(templates::deleted.eq(false))
        .select((templates::id, presets::id.nullable()))
        .first(&mut conn)
        .await
        .optional()?;
    Ok(found.map(|(template_id, preset_id)| FoundTemplate { template_id, preset_id }))
}
