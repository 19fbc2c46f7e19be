//! Seeding rows for the provisioner tests: a user, a template with one version, a workspace,
//! and builds with their jobs.

#![allow(dead_code)]

use chrono::{DateTime, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use poolkeeper::db::enums::{
    AutomaticUpdates, BuildReason, ProvisionerKind, Transition, UserRole, UserStatus,
};
use poolkeeper::db::models::*;
use poolkeeper::db::schema::*;
use poolkeeper::db::DEFAULT_ORGANIZATION_ID;
use uuid::Uuid;

pub async fn user(conn: &mut AsyncPgConnection, name: &str, quiet_hours: Option<&str>) -> Uuid {
    let id = Uuid::new_v4();
    diesel::insert_into(users::table)
        .values(&NewUser {
            id,
            username: name.to_owned(),
            email: format!("{name}@example.com"),
            status: UserStatus::Active,
            role: UserRole::Member,
            is_system: false,
            quiet_hours_schedule: quiet_hours.map(str::to_owned),
        })
        .execute(conn)
        .await
        .expect("insert user");
    id
}

/// A template's schedule options; everything else is defaulted.
#[derive(Debug, Clone)]
pub struct TemplateSpec {
    pub default_ttl_secs: i64,
    pub user_autostop_enabled: bool,
    pub autostop_requirement_days: Vec<String>,
    pub autostop_requirement_weeks: i32,
    pub provisioner: ProvisionerKind,
    pub source: serde_json::Value,
}

impl Default for TemplateSpec {
    fn default() -> Self {
        Self {
            default_ttl_secs: 0,
            user_autostop_enabled: true,
            autostop_requirement_days: Vec::new(),
            autostop_requirement_weeks: 1,
            provisioner: ProvisionerKind::Simulated,
            source: serde_json::json!({"duration_ms": 0}),
        }
    }
}

/// Returns (template id, version id).
pub async fn template(
    conn: &mut AsyncPgConnection,
    name: &str,
    spec: TemplateSpec,
) -> (Uuid, Uuid) {
    let (template_id, version_id) = (Uuid::new_v4(), Uuid::new_v4());
    diesel::insert_into(templates::table)
        .values(&NewTemplate {
            id: template_id,
            organization_id: DEFAULT_ORGANIZATION_ID,
            name: name.to_owned(),
            active_version_id: None,
            deprecation_message: None,
            default_ttl_secs: spec.default_ttl_secs,
            activity_bump_secs: 3600,
            autostop_requirement_days: spec.autostop_requirement_days,
            autostop_requirement_weeks: spec.autostop_requirement_weeks,
            autostart_days: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                .map(str::to_owned)
                .to_vec(),
            user_autostart_enabled: true,
            user_autostop_enabled: spec.user_autostop_enabled,
            failure_ttl_secs: 0,
            time_til_dormant_secs: 0,
            time_til_dormant_autodelete_secs: 0,
            require_active_version: false,
        })
        .execute(conn)
        .await
        .expect("insert template");
    diesel::insert_into(template_versions::table)
        .values(&NewTemplateVersion {
            id: version_id,
            template_id,
            name: "v1".to_owned(),
            message: String::new(),
            provisioner: spec.provisioner,
            source: spec.source,
            created_at: None,
        })
        .execute(conn)
        .await
        .expect("insert version");
    (template_id, version_id)
}

pub async fn workspace(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    template: Uuid,
    name: &str,
    ttl_secs: i64,
    autostart: Option<&str>,
) -> Uuid {
    let id = Uuid::new_v4();
    diesel::insert_into(workspaces::table)
        .values(&NewWorkspace {
            id,
            organization_id: DEFAULT_ORGANIZATION_ID,
            owner_id: owner,
            template_id: template,
            name: name.to_owned(),
            autostart_schedule: autostart.map(str::to_owned),
            ttl_secs,
            next_start_at: None,
            automatic_updates: AutomaticUpdates::Never,
            last_used_at: None,
            created_at: None,
        })
        .execute(conn)
        .await
        .expect("insert workspace");
    id
}

/// A bare pending job (no build), for the acquisition tests.
pub async fn job(
    conn: &mut AsyncPgConnection,
    transition: Transition,
    for_prebuild: bool,
    created_at: Option<DateTime<Utc>>,
) -> Uuid {
    let id = Uuid::new_v4();
    diesel::insert_into(provisioner_jobs::table)
        .values(&NewProvisionerJob {
            id,
            organization_id: DEFAULT_ORGANIZATION_ID,
            input: serde_json::json!({}),
            for_prebuild,
            transition,
            created_at,
        })
        .execute(conn)
        .await
        .expect("insert job");
    id
}

/// A build and its pending job, in one transaction as the store writes them (a worker that
/// is already running must never see the job without its build); returns (build id, job id).
pub async fn build(
    conn: &mut AsyncPgConnection,
    workspace: Uuid,
    version: Uuid,
    initiator: Uuid,
    build_number: i32,
    transition: Transition,
    state: Option<Vec<u8>>,
) -> (Uuid, Uuid) {
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        let job_id = job(conn, transition, false, None).await;
        let build_id = Uuid::new_v4();
        diesel::insert_into(workspace_builds::table)
            .values(&NewWorkspaceBuild {
                id: build_id,
                workspace_id: workspace,
                build_number,
                template_version_id: version,
                preset_id: None,
                transition,
                reason: BuildReason::Initiator,
                initiator_id: initiator,
                job_id,
                deadline: None,
                max_deadline: None,
                provisioner_state: state,
                created_at: None,
            })
            .execute(conn)
            .await?;
        Ok((build_id, job_id))
    })
    .await
    .expect("insert the build and its job")
}

/// The job row as it is now.
pub async fn job_row(conn: &mut AsyncPgConnection, id: Uuid) -> ProvisionerJob {
    use diesel::{QueryDsl, SelectableHelper};
    provisioner_jobs::table
        .find(id)
        .select(ProvisionerJob::as_select())
        .get_result(conn)
        .await
        .expect("job row")
}

/// Waits (up to `cap`) until the job is in one of `wanted`; the worker runs on real time.
pub async fn wait_for_status(
    conn: &mut AsyncPgConnection,
    job: Uuid,
    wanted: &[poolkeeper::db::enums::JobStatus],
    cap: std::time::Duration,
) -> ProvisionerJob {
    let deadline = tokio::time::Instant::now() + cap;
    loop {
        let row = job_row(conn, job).await;
        if wanted.contains(&row.status) {
            return row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {job} stuck in {} (error: {:?})",
            row.status,
            row.error
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
