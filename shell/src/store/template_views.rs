//! Templates as `templates list|show` and `GET /api/v1/templates[/{org}/{name}]` show them:
//! the live templates, and one template with its active version's presets.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use serde::Serialize;
use uuid::Uuid;

use super::StoreError;
use crate::db::models::{Preset, PresetParameter, PresetSchedule, Template, TemplateVersion};
use crate::db::schema::{
    organizations, preset_parameters, preset_schedules, presets, template_versions, templates,
};
use crate::db::DbPool;

/// One live template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, QueryableByName, utoipa::ToSchema)]
pub struct TemplateSummary {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub organization: String,
    #[diesel(sql_type = Text)]
    pub name: String,
    /// The active version's name (none before a first apply completed).
    #[diesel(sql_type = Nullable<Text>)]
    pub active_version: Option<String>,
    /// Presets of the active version.
    #[diesel(sql_type = BigInt)]
    pub presets: i64,
    /// Sum of the desired prebuilds of those presets (schedules not applied).
    #[diesel(sql_type = BigInt)]
    pub desired_instances: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub deprecation_message: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
}

const LIST_SQL: &str = "
SELECT t.id, o.name AS organization, t.name, v.name AS active_version,
       count(p.id) AS presets, coalesce(sum(p.desired_instances), 0)::bigint AS desired_instances,
       t.deprecation_message, t.updated_at
FROM templates t
JOIN organizations o ON o.id = t.organization_id
LEFT JOIN template_versions v ON v.id = t.active_version_id
LEFT JOIN presets p ON p.template_version_id = t.active_version_id
WHERE NOT t.deleted
GROUP BY t.id, o.name, v.name
ORDER BY o.name, t.name";

/// Every live template, by organization and name.
pub async fn list_templates(pool: &DbPool) -> Result<Vec<TemplateSummary>, StoreError> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(LIST_SQL).load(&mut conn).await?)
}

/// One template in full: its lifecycle settings and its active version's presets.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TemplateDetail {
    pub id: Uuid,
    pub organization: String,
    pub name: String,
    pub deprecation_message: Option<String>,
    pub default_ttl_secs: i64,
    pub activity_bump_secs: i64,
    pub autostop_requirement_days: Vec<String>,
    pub autostop_requirement_weeks: i32,
    pub autostart_days: Vec<String>,
    pub user_autostart_enabled: bool,
    pub user_autostop_enabled: bool,
    pub failure_ttl_secs: i64,
    pub time_til_dormant_secs: i64,
    pub time_til_dormant_autodelete_secs: i64,
    pub require_active_version: bool,
    pub active_version: Option<VersionDetail>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct VersionDetail {
    pub id: Uuid,
    pub name: String,
    /// `simulated` or `terraform`.
    pub provisioner: String,
    pub created_at: DateTime<Utc>,
    pub presets: Vec<PresetDetail>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PresetDetail {
    pub id: Uuid,
    pub name: String,
    /// `None`: no prebuild pool.
    pub desired_instances: Option<i32>,
    pub expiration_ttl_secs: i64,
    pub scheduling_timezone: String,
    pub schedule_lead_secs: i64,
    /// `healthy`, `hard_limited` or `validation_failed`.
    pub prebuild_status: String,
    pub last_error: Option<String>,
    pub invalidated_at: Option<DateTime<Utc>>,
    pub parameters: std::collections::BTreeMap<String, String>,
    /// Windows in evaluation order: the first containing now sets the desired count.
    pub schedules: Vec<ScheduleDetail>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ScheduleDetail {
    pub cron: String,
    pub instances: i32,
}

/// The live template `organization/name`, if there is one.
pub async fn show_template(
    pool: &DbPool,
    organization: &str,
    name: &str,
) -> Result<Option<TemplateDetail>, StoreError> {
    let mut conn = pool.get().await?;
    let found: Option<(Template, String)> = templates::table
        .inner_join(organizations::table)
        .filter(organizations::name.eq(organization))
        .filter(templates::name.eq(name))
        .filter(templates::deleted.eq(false))
        .select((Template::as_select(), organizations::name))
        .first(&mut conn)
        .await
        .optional()?;
    let Some((t, organization)) = found else { return Ok(None) };
    let version: Option<TemplateVersion> = match t.active_version_id {
        Some(id) => template_versions::table
            .find(id)
            .select(TemplateVersion::as_select())
            .first(&mut conn)
            .await
            .optional()?,
        None => None,
    };
    let active_version = match version {
        Some(v) => {
            let rows: Vec<Preset> = presets::table
                .filter(presets::template_version_id.eq(v.id))
                .order(presets::name)
                .select(Preset::as_select())
                .load(&mut conn)
                .await?;
            let ids: Vec<Uuid> = rows.iter().map(|p| p.id).collect();
            let parameters: Vec<PresetParameter> = preset_parameters::table
                .filter(preset_parameters::preset_id.eq_any(&ids))
                .order((preset_parameters::preset_id, preset_parameters::name))
                .select(PresetParameter::as_select())
                .load(&mut conn)
                .await?;
            let schedules: Vec<PresetSchedule> = preset_schedules::table
                .filter(preset_schedules::preset_id.eq_any(&ids))
                .order((preset_schedules::preset_id, preset_schedules::position))
                .select(PresetSchedule::as_select())
                .load(&mut conn)
                .await?;
            let presets = rows
                .into_iter()
                .map(|p| PresetDetail {
                    parameters: parameters
                        .iter()
                        .filter(|param| param.preset_id == p.id)
                        .map(|param| (param.name.clone(), param.value.clone()))
                        .collect(),
                    schedules: schedules
                        .iter()
                        .filter(|s| s.preset_id == p.id)
                        .map(|s| ScheduleDetail { cron: s.cron.clone(), instances: s.instances })
                        .collect(),
                    id: p.id,
                    name: p.name,
                    desired_instances: p.desired_instances,
                    expiration_ttl_secs: p.expiration_ttl_secs,
                    scheduling_timezone: p.scheduling_timezone,
                    schedule_lead_secs: p.schedule_lead_secs,
                    prebuild_status: p.prebuild_status.to_string(),
                    last_error: p.last_error,
                    invalidated_at: p.invalidated_at,
                })
                .collect();
            Some(VersionDetail {
                id: v.id,
                name: v.name,
                provisioner: v.provisioner.to_string(),
                created_at: v.created_at,
                presets,
            })
        }
        None => None,
    };
    Ok(Some(TemplateDetail {
        id: t.id,
        organization,
        name: t.name,
        deprecation_message: t.deprecation_message,
        default_ttl_secs: t.default_ttl_secs,
        activity_bump_secs: t.activity_bump_secs,
        autostop_requirement_days: t.autostop_requirement_days,
        autostop_requirement_weeks: t.autostop_requirement_weeks,
        autostart_days: t.autostart_days,
        user_autostart_enabled: t.user_autostart_enabled,
        user_autostop_enabled: t.user_autostop_enabled,
        failure_ttl_secs: t.failure_ttl_secs,
        time_til_dormant_secs: t.time_til_dormant_secs,
        time_til_dormant_autodelete_secs: t.time_til_dormant_autodelete_secs,
        require_active_version: t.require_active_version,
        active_version,
        updated_at: t.updated_at,
    }))
}
