//! The templates file as written (TOML or JSON): plain serde types, checked by
//! `super::validate` before anything is written.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One template, its (next) version and the version's presets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub template: RawTemplate,
    pub version: RawVersion,
    #[serde(default)]
    pub presets: Vec<RawPreset>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTemplate {
    #[serde(default = "default_organization")]
    pub organization: String,
    pub name: String,
    #[serde(default)]
    pub deprecation_message: Option<String>,
    #[serde(default)]
    pub default_ttl_secs: i64,
    #[serde(default = "default_activity_bump")]
    pub activity_bump_secs: i64,
    #[serde(default)]
    pub autostop_requirement_days: Vec<String>,
    #[serde(default = "one")]
    pub autostop_requirement_weeks: i64,
    #[serde(default = "every_day")]
    pub autostart_days: Vec<String>,
    #[serde(default = "yes")]
    pub user_autostart_enabled: bool,
    #[serde(default = "yes")]
    pub user_autostop_enabled: bool,
    #[serde(default)]
    pub failure_ttl_secs: i64,
    #[serde(default)]
    pub time_til_dormant_secs: i64,
    #[serde(default)]
    pub time_til_dormant_autodelete_secs: i64,
    #[serde(default)]
    pub require_active_version: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVersion {
    pub name: String,
    #[serde(default)]
    pub message: String,
    pub provisioner: String,
    /// Checked against the provisioner's shape in `validate`.
    #[serde(default)]
    pub source: serde_json::Map<String, serde_json::Value>,
    /// rules §7: the tags of this version's jobs; a worker takes them only if it has them.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// rules §7: tags of this version's prebuilds' jobs, over `tags` on the same key.
    #[serde(default)]
    pub prebuild_tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPreset {
    pub name: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Prebuild pool size outside every schedule window; absent = no pool.
    #[serde(default)]
    pub instances: Option<i64>,
    #[serde(default)]
    pub expiration_ttl_secs: i64,
    #[serde(default)]
    pub timezone: String,
    #[serde(default)]
    pub schedules: Vec<RawSchedule>,
    #[serde(default)]
    pub lead_secs: i64,
    /// Demand-driven pool size (rules §4 "Autoscale"); absent = a fixed pool.
    #[serde(default)]
    pub autoscale: Option<RawAutoscale>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAutoscale {
    pub min: i64,
    pub max: i64,
    pub window_secs: i64,
    #[serde(default = "one_f64")]
    pub headroom: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    pub cron: String,
    pub instances: i64,
}

/// Source of a `simulated` version: how long a build takes, how often it fails, how long the
/// agents need to become ready, which agents and resources a build has, and which resources a
/// claim re-creates (as a module whose resources depend on the owner would).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSimulatedSource {
    #[serde(default)]
    pub duration_secs: f64,
    #[serde(default)]
    pub failure_rate: f64,
    #[serde(default)]
    pub agent_start_secs: f64,
    /// Absent = one agent named `main`.
    pub agents: Option<Vec<String>>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub replace_on_claim: Vec<String>,
}

/// Source of a `terraform` version: the module directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTerraformSource {
    pub dir: String,
    /// The agents a started workspace runs; absent = one agent named `main`.
    pub agents: Option<Vec<String>>,
}

fn default_organization() -> String {
    crate::db::DEFAULT_ORGANIZATION_NAME.to_owned()
}

fn default_activity_bump() -> i64 {
    3600
}

fn one() -> i64 {
    1
}

fn one_f64() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

fn every_day() -> Vec<String> {
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"].map(str::to_owned).to_vec()
}
