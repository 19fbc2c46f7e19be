//! Row types for the main tables: `X` is a full row (`X::as_select()`), `NewX` an insert.
//!
//! Inserts take the id from the caller (the code needs it right away) and leave timestamps
//! to the caller too: an `Option` timestamp of `None` inserts the column's DEFAULT (`now()`),
//! `Some` pins it (tests and replays need exact instants).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::enums::{
    AgentLifecycle, AutomaticUpdates, BuildReason, FailureKind, JobStatus, PrebuildStatus,
    ProvisionerKind, Transition, UserRole, UserStatus,
};
use super::schema::{
    api_tokens, audit_log, notifications, organizations, preset_parameters, preset_schedules,
    presets, provisioner_jobs, settings, template_versions, templates, users, workspace_agents,
    workspace_builds, workspaces,
};

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = organizations, check_for_backend(diesel::pg::Pg))]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = organizations)]
pub struct NewOrganization {
    pub id: Uuid,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Identifiable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub status: UserStatus,
    pub role: UserRole,
    pub is_system: bool,
    pub quiet_hours_schedule: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = users)]
pub struct NewUser {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub status: UserStatus,
    pub role: UserRole,
    pub is_system: bool,
    pub quiet_hours_schedule: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable, Associations)]
#[diesel(table_name = api_tokens, belongs_to(User), check_for_backend(diesel::pg::Pg))]
pub struct ApiToken {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub secret_hash: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = api_tokens)]
pub struct NewApiToken {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub secret_hash: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = templates, check_for_backend(diesel::pg::Pg))]
pub struct Template {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub active_version_id: Option<Uuid>,
    pub deleted: bool,
    pub deprecation_message: Option<String>,
    pub default_ttl_secs: i64,
    pub activity_bump_secs: i64,
    /// Lowercase three-letter days (`mon` .. `sun`).
    pub autostop_requirement_days: Vec<String>,
    pub autostop_requirement_weeks: i32,
    /// Lowercase three-letter days (`mon` .. `sun`).
    pub autostart_days: Vec<String>,
    pub user_autostart_enabled: bool,
    pub user_autostop_enabled: bool,
    pub failure_ttl_secs: i64,
    pub time_til_dormant_secs: i64,
    pub time_til_dormant_autodelete_secs: i64,
    pub require_active_version: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Every column with a meaningful value; `templates apply` fills all of them.
#[derive(Debug, Clone, Insertable, AsChangeset)]
#[diesel(table_name = templates)]
pub struct NewTemplate {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    /// The FK is deferred: the version may be inserted later in the same transaction.
    pub active_version_id: Option<Uuid>,
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

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable, Associations)]
#[diesel(table_name = template_versions, belongs_to(Template), check_for_backend(diesel::pg::Pg))]
pub struct TemplateVersion {
    pub id: Uuid,
    pub template_id: Uuid,
    pub name: String,
    pub message: String,
    pub provisioner: ProvisionerKind,
    /// Backend configuration (terraform: the module directory; simulated: durations,
    /// failure rate). Always a JSON object.
    pub source: serde_json::Value,
    pub created_at: DateTime<Utc>,
    /// rules §7: the tags of this version's jobs, and of its prebuilds' jobs (JSON objects).
    pub provisioner_tags: serde_json::Value,
    pub prebuild_tags: serde_json::Value,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = template_versions)]
pub struct NewTemplateVersion {
    pub id: Uuid,
    pub template_id: Uuid,
    pub name: String,
    pub message: String,
    pub provisioner: ProvisionerKind,
    pub source: serde_json::Value,
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable, Associations)]
#[diesel(table_name = presets, belongs_to(TemplateVersion), check_for_backend(diesel::pg::Pg))]
pub struct Preset {
    pub id: Uuid,
    pub template_version_id: Uuid,
    pub name: String,
    /// `None` = no prebuild pool.
    pub desired_instances: Option<i32>,
    pub expiration_ttl_secs: i64,
    /// IANA zone of the schedule windows; empty = UTC.
    pub scheduling_timezone: String,
    pub schedule_lead_secs: i64,
    pub invalidated_at: Option<DateTime<Utc>>,
    pub prebuild_status: PrebuildStatus,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// rules §4 "Autoscale": all four set, or none (a fixed pool).
    pub autoscale_min: Option<i32>,
    pub autoscale_max: Option<i32>,
    pub autoscale_window_secs: Option<i64>,
    pub autoscale_headroom: Option<f64>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = presets)]
pub struct NewPreset {
    pub id: Uuid,
    pub template_version_id: Uuid,
    pub name: String,
    pub desired_instances: Option<i32>,
    pub expiration_ttl_secs: i64,
    pub scheduling_timezone: String,
    pub schedule_lead_secs: i64,
    pub invalidated_at: Option<DateTime<Utc>>,
    pub prebuild_status: PrebuildStatus,
    pub autoscale_min: Option<i32>,
    pub autoscale_max: Option<i32>,
    pub autoscale_window_secs: Option<i64>,
    pub autoscale_headroom: Option<f64>,
}

#[derive(
    Debug, Clone, PartialEq, Queryable, Selectable, Identifiable, Insertable, Associations,
)]
#[diesel(
    table_name = preset_parameters,
    primary_key(preset_id, name),
    belongs_to(Preset),
    check_for_backend(diesel::pg::Pg)
)]
pub struct PresetParameter {
    pub preset_id: Uuid,
    pub name: String,
    pub value: String,
}

#[derive(
    Debug, Clone, PartialEq, Queryable, Selectable, Identifiable, Insertable, Associations,
)]
#[diesel(table_name = preset_schedules, belongs_to(Preset), check_for_backend(diesel::pg::Pg))]
pub struct PresetSchedule {
    pub id: Uuid,
    pub preset_id: Uuid,
    /// Order of evaluation: the first window containing `now` wins.
    pub position: i32,
    pub cron: String,
    pub instances: i32,
}

#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Identifiable)]
#[diesel(table_name = provisioner_jobs, check_for_backend(diesel::pg::Pg))]
pub struct ProvisionerJob {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub status: JobStatus,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub worker_id: Option<String>,
    pub error: Option<String>,
    pub input: serde_json::Value,
    pub cancel_cause: Option<String>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub for_prebuild: bool,
    pub transition: Transition,
    /// Generated: 0 = person delete, 1 = person start/stop, 2 = prebuild delete,
    /// 3 = prebuild start/stop. Acquire `ORDER BY queue_priority, created_at, id`.
    pub queue_priority: i16,
    /// Why the job failed; `None` unless it did (and on failures recorded before the column).
    pub failure_kind: Option<FailureKind>,
    /// rules §7: the tags a worker must cover to take the job (a JSON object of strings).
    pub tags: serde_json::Value,
}

/// A new job is always pending; it becomes visible to provisioners at commit.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = provisioner_jobs)]
pub struct NewProvisionerJob {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub input: serde_json::Value,
    pub for_prebuild: bool,
    pub transition: Transition,
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Identifiable)]
#[diesel(table_name = workspaces, check_for_backend(diesel::pg::Pg))]
pub struct Workspace {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub owner_id: Uuid,
    pub template_id: Uuid,
    pub name: String,
    pub autostart_schedule: Option<String>,
    /// 0 = no TTL.
    pub ttl_secs: i64,
    pub next_start_at: Option<DateTime<Utc>>,
    pub last_used_at: DateTime<Utc>,
    pub dormant_at: Option<DateTime<Utc>>,
    pub deleting_at: Option<DateTime<Utc>>,
    pub automatic_updates: AutomaticUpdates,
    pub deleted: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = workspaces)]
pub struct NewWorkspace {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub owner_id: Uuid,
    pub template_id: Uuid,
    pub name: String,
    pub autostart_schedule: Option<String>,
    pub ttl_secs: i64,
    pub next_start_at: Option<DateTime<Utc>>,
    pub automatic_updates: AutomaticUpdates,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(
    Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Identifiable, Associations,
)]
#[diesel(table_name = workspace_builds, belongs_to(Workspace), check_for_backend(diesel::pg::Pg))]
pub struct WorkspaceBuild {
    pub id: Uuid,
    pub workspace_id: Uuid,
    /// 1, 2, ... per workspace; the latest build has the highest.
    pub build_number: i32,
    pub template_version_id: Uuid,
    pub preset_id: Option<Uuid>,
    pub transition: Transition,
    pub reason: BuildReason,
    pub initiator_id: Uuid,
    pub job_id: Uuid,
    pub deadline: Option<DateTime<Utc>>,
    pub max_deadline: Option<DateTime<Utc>>,
    pub provisioner_state: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = workspace_builds)]
pub struct NewWorkspaceBuild {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub build_number: i32,
    pub template_version_id: Uuid,
    pub preset_id: Option<Uuid>,
    pub transition: Transition,
    pub reason: BuildReason,
    pub initiator_id: Uuid,
    pub job_id: Uuid,
    pub deadline: Option<DateTime<Utc>>,
    pub max_deadline: Option<DateTime<Utc>>,
    /// Carried over from the previous build (the backend's state of the workspace).
    pub provisioner_state: Option<Vec<u8>>,
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable, Associations)]
#[diesel(table_name = workspace_agents, belongs_to(WorkspaceBuild, foreign_key = build_id), check_for_backend(diesel::pg::Pg))]
pub struct WorkspaceAgent {
    pub id: Uuid,
    pub build_id: Uuid,
    pub name: String,
    pub lifecycle_state: AgentLifecycle,
    pub auth_token_hash: Option<String>,
    pub ready_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = workspace_agents)]
pub struct NewWorkspaceAgent {
    pub id: Uuid,
    pub build_id: Uuid,
    pub name: String,
    pub lifecycle_state: AgentLifecycle,
    pub auth_token_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = notifications, check_for_backend(diesel::pg::Pg))]
pub struct Notification {
    pub id: Uuid,
    pub user_id: Uuid,
    pub kind: String,
    pub dedupe_key: String,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// Insert with `.on_conflict(notifications::dedupe_key).do_nothing()`.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = notifications)]
pub struct NewNotification {
    pub id: Uuid,
    pub user_id: Uuid,
    pub kind: String,
    pub dedupe_key: String,
    pub payload: serde_json::Value,
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = audit_log, check_for_backend(diesel::pg::Pg))]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor_id: Option<Uuid>,
    pub actor: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<Uuid>,
    pub diff: serde_json::Value,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = audit_log)]
pub struct NewAuditEntry {
    pub at: Option<DateTime<Utc>>,
    pub actor_id: Option<Uuid>,
    /// A username, or the loop's name (`lifecycle`, `prebuilds`) when `actor_id` is NULL.
    pub actor: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<Uuid>,
    pub diff: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = settings, primary_key(key), check_for_backend(diesel::pg::Pg))]
pub struct Setting {
    pub key: String,
    pub value: serde_json::Value,
    pub updated_at: DateTime<Utc>,
}
