//! Raw templates file → [`TemplateSpec`]: every rule checked, nothing written.

use std::collections::{BTreeMap, BTreeSet};

use poolkeeper_core::schedule::{DayName, PrebuildWindows, ScheduleError};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::raw::{
    RawAutoscale, RawFile, RawPreset, RawSimulatedSource, RawTemplate, RawTerraformSource,
};
use super::FieldError;
use crate::db::enums::ProvisionerKind;

/// A valid templates file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateSpec {
    pub organization: String,
    pub name: String,
    pub options: TemplateOptions,
    pub version: VersionSpec,
    pub presets: Vec<PresetSpec>,
}

/// The template's schedule options, in the columns' units.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateOptions {
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
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionSpec {
    pub name: String,
    pub message: String,
    pub provisioner: ProvisionerKind,
    pub source: serde_json::Value,
    /// Left out of the content hash when empty, so that files without tags keep their hash.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub prebuild_tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PresetSpec {
    pub name: String,
    pub parameters: BTreeMap<String, String>,
    pub desired_instances: Option<i32>,
    pub expiration_ttl_secs: i64,
    pub scheduling_timezone: String,
    pub schedule_lead_secs: i64,
    pub schedules: Vec<ScheduleSpec>,
    /// Omitted from the content hash when absent, so that files without it keep their hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<AutoscaleSpec>,
}

/// rules §4 "Autoscale", in the columns' units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AutoscaleSpec {
    pub min: i32,
    pub max: i32,
    pub window_secs: i64,
    pub headroom: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleSpec {
    pub cron: String,
    pub instances: i32,
}

impl TemplateSpec {
    /// Hash of what a version is made of (version + presets): equal hashes mean re-applying
    /// the file needs no new version.
    pub fn content_hash(&self) -> String {
        #[derive(Serialize)]
        struct Content<'a> {
            version: &'a VersionSpec,
            presets: &'a [PresetSpec],
        }
        // Serializing plain structs, maps and strings cannot fail; an empty hash input
        // would only make the next apply create a version, never lose one.
        let bytes = serde_json::to_vec(&Content { version: &self.version, presets: &self.presets })
            .unwrap_or_default();
        Sha256::digest(&bytes).iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

/// Checks every rule of a templates file (DESIGN "Principles": bad input is refused at the
/// edge, naming the field).
pub fn validate(raw: RawFile) -> Result<TemplateSpec, FieldError> {
    let options = template_options(&raw.template)?;
    let organization = non_empty("template.organization", &raw.template.organization)?;
    let name = non_empty("template.name", &raw.template.name)?;
    let version = version(&raw)?;
    let mut names = BTreeSet::new();
    let mut presets = Vec::with_capacity(raw.presets.len());
    for (index, preset) in raw.presets.iter().enumerate() {
        let spec = preset_spec(index, preset)?;
        if !names.insert(spec.name.clone()) {
            return Err(FieldError::new(
                format!("presets[{index}].name"),
                format!("duplicate preset name {:?}", spec.name),
            ));
        }
        presets.push(spec);
    }
    Ok(TemplateSpec { organization, name, options, version, presets })
}

fn template_options(t: &RawTemplate) -> Result<TemplateOptions, FieldError> {
    Ok(TemplateOptions {
        deprecation_message: t.deprecation_message.clone(),
        default_ttl_secs: non_negative("template.default_ttl_secs", t.default_ttl_secs)?,
        activity_bump_secs: non_negative("template.activity_bump_secs", t.activity_bump_secs)?,
        autostop_requirement_days: days(
            "template.autostop_requirement_days",
            &t.autostop_requirement_days,
        )?,
        autostop_requirement_weeks: count(
            "template.autostop_requirement_weeks",
            t.autostop_requirement_weeks,
        )?,
        autostart_days: days("template.autostart_days", &t.autostart_days)?,
        user_autostart_enabled: t.user_autostart_enabled,
        user_autostop_enabled: t.user_autostop_enabled,
        failure_ttl_secs: non_negative("template.failure_ttl_secs", t.failure_ttl_secs)?,
        time_til_dormant_secs: non_negative(
            "template.time_til_dormant_secs",
            t.time_til_dormant_secs,
        )?,
        time_til_dormant_autodelete_secs: non_negative(
            "template.time_til_dormant_autodelete_secs",
            t.time_til_dormant_autodelete_secs,
        )?,
        require_active_version: t.require_active_version,
    })
}

/// rules §7 tags, each checked by the core, errors at `field.<key>`.
fn tags(
    field: &str,
    tags: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, FieldError> {
    for (key, value) in tags {
        poolkeeper_core::tags::check_tag(key, value)
            .map_err(|err| FieldError::new(format!("{field}.{key}"), err))?;
    }
    Ok(tags.clone())
}

fn version(raw: &RawFile) -> Result<VersionSpec, FieldError> {
    let v = &raw.version;
    let name = non_empty("version.name", &v.name)?;
    let job_tags = tags("version.tags", &v.tags)?;
    let prebuild_tags = tags("version.prebuild_tags", &v.prebuild_tags)?;
    let provisioner: ProvisionerKind = v
        .provisioner
        .parse()
        .map_err(|_| FieldError::new("version.provisioner", "expected simulated or terraform"))?;
    let source = serde_json::Value::Object(v.source.clone());
    // The shape is checked now so that a provisioner never meets a source it cannot read.
    let shape_error = |err| super::path_error("version.source", err);
    match provisioner {
        ProvisionerKind::Simulated => {
            let s: RawSimulatedSource =
                serde_path_to_error::deserialize(source.clone()).map_err(shape_error)?;
            finite_non_negative("version.source.duration_secs", s.duration_secs)?;
            finite_non_negative("version.source.agent_start_secs", s.agent_start_secs)?;
            if !(0.0..=1.0).contains(&s.failure_rate) {
                return Err(FieldError::new(
                    "version.source.failure_rate",
                    "must be between 0 and 1",
                ));
            }
            names("version.source.agents", s.agents.as_deref().unwrap_or_default())?;
            names("version.source.resources", &s.resources)?;
            names("version.source.replace_on_claim", &s.replace_on_claim)?;
            if let Some(unknown) = s.replace_on_claim.iter().find(|r| !s.resources.contains(r)) {
                return Err(FieldError::new(
                    "version.source.replace_on_claim",
                    format!("{unknown:?} is not one of version.source.resources"),
                ));
            }
        }
        ProvisionerKind::Terraform => {
            let s: RawTerraformSource =
                serde_path_to_error::deserialize(source.clone()).map_err(shape_error)?;
            non_empty("version.source.dir", &s.dir)?;
            names("version.source.agents", s.agents.as_deref().unwrap_or_default())?;
        }
    }
    Ok(VersionSpec {
        name,
        message: v.message.clone(),
        provisioner,
        source,
        tags: job_tags,
        prebuild_tags,
    })
}

/// Names that are neither empty nor repeated.
fn names(field: &str, names: &[String]) -> Result<(), FieldError> {
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() {
            return Err(FieldError::new(format!("{field}[{i}]"), "must not be empty"));
        }
        if names[..i].contains(name) {
            return Err(FieldError::new(format!("{field}[{i}]"), format!("{name:?} is repeated")));
        }
    }
    Ok(())
}

fn preset_spec(index: usize, p: &RawPreset) -> Result<PresetSpec, FieldError> {
    let at = |field: &str| format!("presets[{index}].{field}");
    let name = non_empty(&at("name"), &p.name)?;
    for key in p.parameters.keys() {
        if key.is_empty() {
            return Err(FieldError::new(at("parameters"), "a parameter name must not be empty"));
        }
    }
    let mut desired_instances = p.instances.map(|n| count(&at("instances"), n)).transpose()?;
    let autoscale = p.autoscale.as_ref().map(|a| autoscale(index, a)).transpose()?;
    // An autoscaled preset has a pool even without a fixed count: the demand sizes it.
    if autoscale.is_some() && desired_instances.is_none() {
        desired_instances = Some(0);
    }
    let mut schedules = Vec::with_capacity(p.schedules.len());
    for (i, schedule) in p.schedules.iter().enumerate() {
        let instances = count(&at(&format!("schedules[{i}].instances")), schedule.instances)?;
        schedules.push(ScheduleSpec { cron: schedule.cron.clone(), instances });
    }
    // A zone alone is checked too: it will be used as soon as a schedule is added.
    if !schedules.is_empty() || !p.timezone.is_empty() {
        PrebuildWindows::validate(&p.timezone, schedules.iter().map(|s| s.cron.as_str()))
            .map_err(|err| located(index, err))?;
    }
    Ok(PresetSpec {
        name,
        parameters: p.parameters.clone(),
        desired_instances,
        expiration_ttl_secs: non_negative(&at("expiration_ttl_secs"), p.expiration_ttl_secs)?,
        scheduling_timezone: p.timezone.clone(),
        schedule_lead_secs: non_negative(&at("lead_secs"), p.lead_secs)?,
        schedules,
        autoscale,
    })
}

/// The autoscale table: counts and a window the columns hold, then the core's own check
/// (`min ≤ max`, a window, a finite headroom ≥ 0), each error naming its field.
fn autoscale(index: usize, a: &RawAutoscale) -> Result<AutoscaleSpec, FieldError> {
    let at = |field: &str| format!("presets[{index}].autoscale.{field}");
    let spec = AutoscaleSpec {
        min: count(&at("min"), a.min)?,
        max: count(&at("max"), a.max)?,
        window_secs: non_negative(&at("window_secs"), a.window_secs)?,
        headroom: a.headroom,
    };
    poolkeeper_core::prebuilds::Autoscale::from(spec)
        .check()
        .map_err(|(field, message)| FieldError::new(at(field), message))?;
    Ok(spec)
}

impl From<AutoscaleSpec> for poolkeeper_core::prebuilds::Autoscale {
    fn from(spec: AutoscaleSpec) -> Self {
        // The columns are checked non-negative before this is used.
        poolkeeper_core::prebuilds::Autoscale {
            min: u32::try_from(spec.min).unwrap_or(0),
            max: u32::try_from(spec.max).unwrap_or(0),
            window_secs: u64::try_from(spec.window_secs).unwrap_or(0),
            headroom: spec.headroom,
        }
    }
}

/// The core names fields relative to the preset, in its own words (`scheduling_timezone`);
/// the file calls that field `timezone`.
fn located(index: usize, err: ScheduleError) -> FieldError {
    match err {
        ScheduleError::At { path, error } => {
            let path = if path == "scheduling_timezone" { "timezone".to_owned() } else { path };
            FieldError::new(format!("presets[{index}].{path}"), error.to_string())
        }
        other => FieldError::new(format!("presets[{index}].schedules"), other.to_string()),
    }
}

fn non_empty(field: &str, value: &str) -> Result<String, FieldError> {
    if value.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    Ok(value.to_owned())
}

fn non_negative(field: &str, value: i64) -> Result<i64, FieldError> {
    if value < 0 {
        return Err(FieldError::new(field, format!("must not be negative (got {value})")));
    }
    Ok(value)
}

fn finite_non_negative(field: &str, value: f64) -> Result<f64, FieldError> {
    if !value.is_finite() || value < 0.0 {
        return Err(FieldError::new(field, "must be a non-negative number"));
    }
    Ok(value)
}

fn count(field: &str, value: i64) -> Result<i32, FieldError> {
    let value = non_negative(field, value)?;
    i32::try_from(value).map_err(|_| FieldError::new(field, format!("too large (got {value})")))
}

fn days(field: &str, values: &[String]) -> Result<Vec<String>, FieldError> {
    let mut days = BTreeSet::new();
    for (i, value) in values.iter().enumerate() {
        let day: DayName =
            value.parse().map_err(|err: String| FieldError::new(format!("{field}[{i}]"), err))?;
        days.insert(day);
    }
    Ok(days.into_iter().map(|day| day.as_str().to_owned()).collect())
}
