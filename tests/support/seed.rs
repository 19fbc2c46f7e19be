//! Seeding rows for the store and daemon tests (also included with `#[path]` by the
//! process tests of `shell/tests`).
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use poolkeeper::db::enums::{
    AgentLifecycle, AutomaticUpdates, BuildReason, JobStatus, PrebuildStatus, ProvisionerKind,
    Transition,
};
use poolkeeper::db::models::{
    NewPreset, NewProvisionerJob, NewTemplateVersion, NewUser, NewWorkspace, NewWorkspaceAgent,
    NewWorkspaceBuild,
};
use poolkeeper::db::schema::{
    presets, provisioner_jobs, template_versions, templates, users, workspace_agents,
    workspace_builds, workspaces,
};
use poolkeeper::db::{DEFAULT_ORGANIZATION_ID, PREBUILDS_USER_ID};
use poolkeeper_core::prebuilds::ReconcilerConfig;
use uuid::Uuid;

/// The reconciler settings of `poolkeeper run`'s defaults: back off 1 minute after a
/// failure, look back 1 hour, stop at 3 consecutive failures, no cap on pending creates.
pub const CONFIG: ReconcilerConfig = ReconcilerConfig {
    backoff_interval_secs: 60,
    backoff_lookback_secs: 3600,
    failure_hard_limit: 3,
    max_pending_creates_per_preset: 0,
    failed_keep: 3,
    failed_grace_secs: 3600,
};

/// An instant written as in RFC 3339 (years beyond 9999 too, as chrono reads them).
pub fn t(text: &str) -> DateTime<Utc> {
    text.parse().expect("test instant")
}

/// A template with one active version; returns (template id, version id).
pub async fn template(conn: &mut AsyncPgConnection, name: &str) -> (Uuid, Uuid) {
    let template_id = Uuid::new_v4();
    diesel::insert_into(templates::table)
        .values((
            templates::id.eq(template_id),
            templates::organization_id.eq(DEFAULT_ORGANIZATION_ID),
            templates::name.eq(name),
        ))
        .execute(conn)
        .await
        .expect("insert template");
    let version_id = version(conn, template_id, "v1").await;
    (template_id, version_id)
}

/// A new version of `template_id`, made active.
pub async fn version(conn: &mut AsyncPgConnection, template_id: Uuid, name: &str) -> Uuid {
    let id = Uuid::new_v4();
    diesel::insert_into(template_versions::table)
        .values(NewTemplateVersion {
            id,
            template_id,
            name: name.to_owned(),
            message: String::new(),
            provisioner: ProvisionerKind::Simulated,
            source: serde_json::json!({}),
            created_at: None,
        })
        .execute(conn)
        .await
        .expect("insert version");
    diesel::update(templates::table.find(template_id))
        .set(templates::active_version_id.eq(Some(id)))
        .execute(conn)
        .await
        .expect("activate version");
    id
}

pub fn new_preset(version_id: Uuid, name: &str, desired: i32) -> NewPreset {
    NewPreset {
        id: Uuid::new_v4(),
        template_version_id: version_id,
        name: name.to_owned(),
        desired_instances: Some(desired),
        expiration_ttl_secs: 0,
        scheduling_timezone: String::new(),
        schedule_lead_secs: 0,
        invalidated_at: None,
        prebuild_status: PrebuildStatus::Healthy,
        autoscale_min: None,
        autoscale_max: None,
        autoscale_window_secs: None,
        autoscale_headroom: None,
    }
}

pub async fn preset(
    conn: &mut AsyncPgConnection,
    version_id: Uuid,
    name: &str,
    desired: i32,
) -> Uuid {
    let new = new_preset(version_id, name, desired);
    diesel::insert_into(presets::table).values(&new).execute(conn).await.expect("insert preset");
    new.id
}

pub async fn user(conn: &mut AsyncPgConnection, name: &str) -> Uuid {
    let id = Uuid::new_v4();
    diesel::insert_into(users::table)
        .values(NewUser {
            id,
            username: name.to_owned(),
            email: String::new(),
            status: poolkeeper::db::enums::UserStatus::Active,
            role: poolkeeper::db::enums::UserRole::Member,
            is_system: false,
            quiet_hours_schedule: None,
        })
        .execute(conn)
        .await
        .expect("insert user");
    id
}

/// A workspace with one build (number 1) whose job has `status`; agents ready when `ready`.
pub struct WorkspaceSeed {
    pub owner_id: Uuid,
    pub template_id: Uuid,
    pub version_id: Uuid,
    pub preset_id: Option<Uuid>,
    pub transition: Transition,
    pub status: JobStatus,
    pub created_at: DateTime<Utc>,
    pub ready: bool,
}

impl WorkspaceSeed {
    /// A person's workspace whose build #1 (`transition`) succeeded, agents ready.
    pub fn owned(
        owner_id: Uuid,
        template_id: Uuid,
        version_id: Uuid,
        transition: Transition,
        created_at: DateTime<Utc>,
    ) -> Self {
        Self {
            owner_id,
            template_id,
            version_id,
            preset_id: None,
            transition,
            status: JobStatus::Succeeded,
            created_at,
            ready: true,
        }
    }

    pub fn prebuild(
        template_id: Uuid,
        version_id: Uuid,
        preset_id: Uuid,
        created_at: DateTime<Utc>,
    ) -> Self {
        Self {
            owner_id: PREBUILDS_USER_ID,
            template_id,
            version_id,
            preset_id: Some(preset_id),
            transition: Transition::Start,
            status: JobStatus::Succeeded,
            created_at,
            ready: true,
        }
    }
}

/// `n` running workspaces (start build #1 succeeded at 08:00 on 2025-06-02) of a new person
/// `alice`, on a new template `go`.
pub async fn running_workspaces(conn: &mut AsyncPgConnection, n: usize) -> Vec<Uuid> {
    let (template_id, version_id) = template(conn, "go").await;
    let alice = user(conn, "alice").await;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let seed = WorkspaceSeed::owned(
            alice,
            template_id,
            version_id,
            Transition::Start,
            t("2025-06-02T08:00:00Z"),
        );
        ids.push(workspace(conn, seed).await);
    }
    ids
}

pub async fn workspace(conn: &mut AsyncPgConnection, seed: WorkspaceSeed) -> Uuid {
    let id = Uuid::new_v4();
    diesel::insert_into(workspaces::table)
        .values(NewWorkspace {
            id,
            organization_id: DEFAULT_ORGANIZATION_ID,
            owner_id: seed.owner_id,
            template_id: seed.template_id,
            name: format!("ws-{}", id.simple()),
            autostart_schedule: None,
            ttl_secs: 0,
            next_start_at: None,
            automatic_updates: AutomaticUpdates::Never,
            last_used_at: Some(seed.created_at),
            created_at: Some(seed.created_at),
        })
        .execute(conn)
        .await
        .expect("insert workspace");
    build(conn, id, 1, &seed).await;
    id
}

/// Adds build `number` to workspace `id` with a job in `seed.status`.
pub async fn build(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    number: i32,
    seed: &WorkspaceSeed,
) -> Uuid {
    let job_id = Uuid::new_v4();
    diesel::insert_into(provisioner_jobs::table)
        .values(NewProvisionerJob {
            id: job_id,
            organization_id: DEFAULT_ORGANIZATION_ID,
            input: serde_json::json!({}),
            for_prebuild: seed.owner_id == PREBUILDS_USER_ID,
            transition: seed.transition,
            created_at: Some(seed.created_at),
        })
        .execute(conn)
        .await
        .expect("insert job");
    set_job_status(conn, job_id, seed.status, seed.created_at).await;
    let build_id = Uuid::new_v4();
    diesel::insert_into(workspace_builds::table)
        .values(NewWorkspaceBuild {
            id: build_id,
            workspace_id: id,
            build_number: number,
            template_version_id: seed.version_id,
            preset_id: seed.preset_id,
            transition: seed.transition,
            reason: BuildReason::Prebuild,
            initiator_id: seed.owner_id,
            job_id,
            deadline: None,
            max_deadline: None,
            provisioner_state: None,
            created_at: Some(seed.created_at),
        })
        .execute(conn)
        .await
        .expect("insert build");
    diesel::insert_into(workspace_agents::table)
        .values(NewWorkspaceAgent {
            id: Uuid::new_v4(),
            build_id,
            name: "main".to_owned(),
            lifecycle_state: if seed.ready {
                AgentLifecycle::Ready
            } else {
                AgentLifecycle::Starting
            },
            auth_token_hash: None,
        })
        .execute(conn)
        .await
        .expect("insert agent");
    job_id
}

/// Moves a job to `status` with the timestamps its CHECK constraints want.
pub async fn set_job_status(
    conn: &mut AsyncPgConnection,
    job_id: Uuid,
    status: JobStatus,
    at: DateTime<Utc>,
) {
    let started = (status != JobStatus::Pending).then_some(at);
    let completed = status.is_finished().then_some(at);
    diesel::update(provisioner_jobs::table.find(job_id))
        .set((
            provisioner_jobs::status.eq(status),
            provisioner_jobs::started_at.eq(started),
            provisioner_jobs::completed_at.eq(completed),
        ))
        .execute(conn)
        .await
        .expect("update job");
}

/// What a provisioner would do, in SQL: every pending job succeeds, start builds get a ready
/// agent, delete builds mark their workspace deleted.
pub async fn complete_pending_jobs(conn: &mut AsyncPgConnection, at: DateTime<Utc>) {
    diesel::sql_query(
        "INSERT INTO workspace_agents (build_id, name, lifecycle_state)
         SELECT b.id, 'main', 'ready' FROM workspace_builds b JOIN provisioner_jobs j ON j.id = b.job_id
          WHERE j.status = 'pending' AND b.transition = 'start'",
    )
    .execute(conn)
    .await
    .expect("agents");
    diesel::sql_query(
        "UPDATE workspaces SET deleted = true WHERE id IN (
           SELECT b.workspace_id FROM workspace_builds b JOIN provisioner_jobs j ON j.id = b.job_id
            WHERE j.status = 'pending' AND b.transition = 'delete')",
    )
    .execute(conn)
    .await
    .expect("deletes");
    diesel::sql_query(
        "UPDATE provisioner_jobs SET status = 'succeeded', started_at = $1, completed_at = $1
          WHERE status = 'pending'",
    )
    .bind::<diesel::sql_types::Timestamptz, _>(at)
    .execute(conn)
    .await
    .expect("complete jobs");
}

pub async fn count(conn: &mut AsyncPgConnection, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let row: Count = diesel::sql_query(sql).get_result(conn).await.expect("count query");
    row.n
}

/// Takes (or renews) the `loop_name` lease for the test, as a leader's cycle does, and
/// returns its fence for the appliers.
pub async fn lead(
    db: &poolkeeper::db::test_db::TestDatabase,
    loop_name: &'static str,
) -> poolkeeper::store::leases::Fence {
    let mut conn = db.conn().await;
    let holder = "test";
    let lease = std::time::Duration::from_secs(600);
    poolkeeper::store::leases::acquire_or_renew(&mut conn, loop_name, holder, lease)
        .await
        .expect("lease query")
        .expect("the lease is free")
}

/// The daemon's settings for an in-process run against `url`: both loops every `interval`,
/// the reconciler at [`CONFIG`], no recorder, no reaper.
pub fn daemon_settings(
    url: &str,
    interval: std::time::Duration,
) -> poolkeeper::daemon::DaemonSettings {
    poolkeeper::daemon::DaemonSettings {
        database_url: url.to_owned(),
        lifecycle_interval: interval,
        prebuild_interval: interval,
        prebuild_resync_interval: std::time::Duration::from_secs(300),
        prebuild_feed_poll: std::time::Duration::from_secs(1),
        prebuild_create_batch: 2000,
        max_retry_delay: std::time::Duration::from_secs(1),
        reconciler: CONFIG,
        parallelism: 2,
        recorder: None,
        reaper: None,
        retention: None,
    }
}
