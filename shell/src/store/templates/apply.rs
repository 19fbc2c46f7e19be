//! `templates apply`: write a validated [`TemplateSpec`] in one transaction. An unchanged
//! file is a no-op; a changed version or preset set becomes a new, active version.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

use crate::db::enums::PrebuildStatus;
use crate::db::models::{
    NewPreset, NewTemplate, NewTemplateVersion, PresetParameter, PresetSchedule, Template,
    TemplateVersion,
};
use crate::db::schema::{
    organizations, preset_parameters, preset_schedules, presets, template_versions, templates,
};
use crate::db::DbPool;
use crate::store::audit::{self, Actor, Change};
use crate::store::StoreError;
use crate::templates_file::{FieldError, TemplateSpec};

/// Marks the content hash inside a version's message (the only free-text column of a
/// version), so that re-applying a file can tell whether anything changed.
const HASH_MARK: &str = "content-sha256:";

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApplyError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Invalid(err) => err.label(),
            Self::Store(err) => err.label(),
        }
    }
}

impl From<diesel::result::Error> for ApplyError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Store(StoreError::Query(err))
    }
}

/// What `apply` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ApplyOutcome {
    pub template_id: Uuid,
    pub active_version_id: Uuid,
    pub template_created: bool,
    /// Schedule options (or deprecation, or a revived deleted template) changed.
    pub template_updated: bool,
    /// A new version was written and made active.
    pub version_created: bool,
}

impl ApplyOutcome {
    pub fn is_noop(&self) -> bool {
        !(self.template_created || self.template_updated || self.version_created)
    }
}

impl std::fmt::Display for ApplyOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_noop() {
            return write!(f, "template {} unchanged", self.template_id);
        }
        let what = if self.template_created { "created" } else { "updated" };
        write!(f, "template {} {what}", self.template_id)?;
        if self.version_created {
            write!(f, "; new active version {}", self.active_version_id)?;
        }
        Ok(())
    }
}

/// Writes `spec` in one transaction (DESIGN "Principles": validated before, so nothing
/// half-valid is ever written), audited as done from the command line.
pub async fn apply(
    pool: &DbPool,
    spec: &TemplateSpec,
    now: DateTime<Utc>,
) -> Result<ApplyOutcome, ApplyError> {
    apply_by(pool, spec, &Actor::cli(), now).await
}

/// [`apply`] on behalf of `actor`; a change (not a no-op) is audited in the same transaction.
pub async fn apply_by(
    pool: &DbPool,
    spec: &TemplateSpec,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<ApplyOutcome, ApplyError> {
    let mut conn = pool.get().await.map_err(StoreError::from)?;
    let outcome = conn
        .transaction::<_, ApplyError, _>(async |conn| {
            let outcome = apply_in(conn, spec, now).await?;
            if !outcome.is_noop() {
                let change = Change {
                    action: "template_apply",
                    resource_type: "template",
                    resource_id: Some(outcome.template_id),
                    diff: serde_json::json!({
                        "organization": spec.organization,
                        "name": spec.name,
                        "version": spec.version.name,
                        "outcome": outcome,
                    }),
                };
                audit::record(conn, now, actor, change).await?;
            }
            Ok(outcome)
        })
        .await?;
    tracing::info!(
        template_id = %outcome.template_id,
        version_id = %outcome.active_version_id,
        noop = outcome.is_noop(),
        "templates file applied"
    );
    Ok(outcome)
}

async fn apply_in(
    conn: &mut diesel_async::AsyncPgConnection,
    spec: &TemplateSpec,
    now: DateTime<Utc>,
) -> Result<ApplyOutcome, ApplyError> {
    let organization_id: Uuid = organizations::table
        .filter(organizations::name.eq(&spec.organization))
        .select(organizations::id)
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| {
            FieldError::new(
                "template.organization",
                format!("unknown organization {:?}", spec.organization),
            )
        })?;
    let hash = spec.content_hash();
    let o = &spec.options;
    let mut row = NewTemplate {
        id: Uuid::new_v4(),
        organization_id,
        name: spec.name.clone(),
        active_version_id: None,
        deprecation_message: o.deprecation_message.clone(),
        default_ttl_secs: o.default_ttl_secs,
        activity_bump_secs: o.activity_bump_secs,
        autostop_requirement_days: o.autostop_requirement_days.clone(),
        autostop_requirement_weeks: o.autostop_requirement_weeks,
        autostart_days: o.autostart_days.clone(),
        user_autostart_enabled: o.user_autostart_enabled,
        user_autostop_enabled: o.user_autostop_enabled,
        failure_ttl_secs: o.failure_ttl_secs,
        time_til_dormant_secs: o.time_til_dormant_secs,
        time_til_dormant_autodelete_secs: o.time_til_dormant_autodelete_secs,
        require_active_version: o.require_active_version,
    };
    // Insert-if-absent, then lock: two concurrent applies of one name serialize here.
    let inserted = diesel::insert_into(templates::table)
        .values(&row)
        .on_conflict((templates::organization_id, templates::name))
        .do_nothing()
        .execute(conn)
        .await?;
    let existing: Template = templates::table
        .filter(templates::organization_id.eq(organization_id))
        .filter(templates::name.eq(&spec.name))
        .for_update()
        .select(Template::as_select())
        .first(conn)
        .await?;
    let template_created = inserted == 1;
    let active: Option<TemplateVersion> = match existing.active_version_id {
        Some(id) => template_versions::table
            .find(id)
            .select(TemplateVersion::as_select())
            .first(conn)
            .await
            .optional()?,
        None => None,
    };
    let unchanged = active.as_ref().filter(|v| stored_hash(&v.message) == Some(hash.as_str()));
    // Re-applying an older file rolls back to its version rather than copying it.
    let earlier: Option<TemplateVersion> = match unchanged {
        Some(_) => None,
        None => template_versions::table
            .filter(template_versions::template_id.eq(existing.id))
            .filter(template_versions::name.eq(&spec.version.name))
            .select(TemplateVersion::as_select())
            .first(conn)
            .await
            .optional()?
            .filter(|v| stored_hash(&v.message) == Some(hash.as_str())),
    };
    let (active_version_id, version_created) = match (unchanged, earlier) {
        (Some(version), _) => (version.id, false),
        (None, Some(version)) => (version.id, false),
        (None, None) => (insert_version(conn, existing.id, spec, &hash).await?, true),
    };
    let reactivated = unchanged.is_none() && !version_created;
    row.id = existing.id;
    row.active_version_id = Some(active_version_id);
    let template_updated =
        !template_created && (version_created || reactivated || options_differ(&existing, &row));
    if template_created || template_updated || existing.deleted {
        diesel::update(templates::table.find(existing.id))
            .set((&row, templates::deleted.eq(false), templates::updated_at.eq(now)))
            .execute(conn)
            .await?;
    }
    Ok(ApplyOutcome {
        template_id: existing.id,
        active_version_id,
        template_created,
        template_updated: template_updated || (existing.deleted && !template_created),
        version_created,
    })
}

fn stored_hash(message: &str) -> Option<&str> {
    message.rsplit_once(HASH_MARK).map(|(_, hash)| hash.trim())
}

fn options_differ(t: &Template, n: &NewTemplate) -> bool {
    t.deprecation_message != n.deprecation_message
        || t.default_ttl_secs != n.default_ttl_secs
        || t.activity_bump_secs != n.activity_bump_secs
        || t.autostop_requirement_days != n.autostop_requirement_days
        || t.autostop_requirement_weeks != n.autostop_requirement_weeks
        || t.autostart_days != n.autostart_days
        || t.user_autostart_enabled != n.user_autostart_enabled
        || t.user_autostop_enabled != n.user_autostop_enabled
        || t.failure_ttl_secs != n.failure_ttl_secs
        || t.time_til_dormant_secs != n.time_til_dormant_secs
        || t.time_til_dormant_autodelete_secs != n.time_til_dormant_autodelete_secs
        || t.require_active_version != n.require_active_version
}

async fn insert_version(
    conn: &mut diesel_async::AsyncPgConnection,
    template_id: Uuid,
    spec: &TemplateSpec,
    hash: &str,
) -> Result<Uuid, ApplyError> {
    let taken: i64 = template_versions::table
        .filter(template_versions::template_id.eq(template_id))
        .filter(template_versions::name.eq(&spec.version.name))
        .count()
        .get_result(conn)
        .await?;
    if taken > 0 {
        return Err(FieldError::new(
            "version.name",
            format!(
                "version {:?} already exists with different content: name the new version",
                spec.version.name
            ),
        )
        .into());
    }
    let message = if spec.version.message.is_empty() {
        format!("{HASH_MARK}{hash}")
    } else {
        format!("{}\n{HASH_MARK}{hash}", spec.version.message)
    };
    let version_id = Uuid::new_v4();
    diesel::insert_into(template_versions::table)
        .values(NewTemplateVersion {
            id: version_id,
            template_id,
            name: spec.version.name.clone(),
            message,
            provisioner: spec.version.provisioner,
            source: spec.version.source.clone(),
            created_at: None,
        })
        .execute(conn)
        .await?;
    // rules §7: the tags its jobs will carry (the columns default to none).
    if !spec.version.tags.is_empty() || !spec.version.prebuild_tags.is_empty() {
        diesel::update(template_versions::table.find(version_id))
            .set((
                template_versions::provisioner_tags.eq(serde_json::json!(spec.version.tags)),
                template_versions::prebuild_tags.eq(serde_json::json!(spec.version.prebuild_tags)),
            ))
            .execute(conn)
            .await?;
    }
    for preset in &spec.presets {
        let preset_id = Uuid::new_v4();
        diesel::insert_into(presets::table)
            .values(NewPreset {
                id: preset_id,
                template_version_id: version_id,
                name: preset.name.clone(),
                desired_instances: preset.desired_instances,
                expiration_ttl_secs: preset.expiration_ttl_secs,
                scheduling_timezone: preset.scheduling_timezone.clone(),
                schedule_lead_secs: preset.schedule_lead_secs,
                invalidated_at: None,
                prebuild_status: PrebuildStatus::Healthy,
                autoscale_min: preset.autoscale.map(|a| a.min),
                autoscale_max: preset.autoscale.map(|a| a.max),
                autoscale_window_secs: preset.autoscale.map(|a| a.window_secs),
                autoscale_headroom: preset.autoscale.map(|a| a.headroom),
            })
            .execute(conn)
            .await?;
        let parameters: Vec<PresetParameter> = preset
            .parameters
            .iter()
            .map(|(name, value)| PresetParameter {
                preset_id,
                name: name.clone(),
                value: value.clone(),
            })
            .collect();
        diesel::insert_into(preset_parameters::table).values(&parameters).execute(conn).await?;
        let schedules: Vec<PresetSchedule> = preset
            .schedules
            .iter()
            .enumerate()
            .map(|(position, s)| PresetSchedule {
                id: Uuid::new_v4(),
                preset_id,
                position: i32::try_from(position).unwrap_or(i32::MAX),
                cron: s.cron.clone(),
                instances: s.instances,
            })
            .collect();
        diesel::insert_into(preset_schedules::table).values(&schedules).execute(conn).await?;
    }
    Ok(version_id)
}
