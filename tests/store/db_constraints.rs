//! The schema's own guarantees: every row type round-trips, bad rows are refused by the
//! constraint named in the assertion, pending jobs come out in acquisition order, and the
//! NOTIFY triggers announce changes only at commit.

use chrono::{DateTime, TimeZone, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use poolkeeper::db::enums::{
    AgentLifecycle, AutomaticUpdates, BuildReason, JobStatus, PrebuildStatus, ProvisionerKind,
    Transition, UserRole, UserStatus,
};
use poolkeeper::db::models::*;
use poolkeeper::db::schema::*;
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::db::{DEFAULT_ORGANIZATION_ID, JOB_CHANNEL, PREBUILDS_USER_ID, PRESET_CHANNEL};
use uuid::Uuid;

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 2, hour, 0, 0).single().expect("valid instant")
}

/// One of everything, linked: user → template → version → preset → workspace → build.
struct Fixture {
    user: NewUser,
    template: NewTemplate,
    version: NewTemplateVersion,
    preset: NewPreset,
    workspace: NewWorkspace,
    job: NewProvisionerJob,
    build: NewWorkspaceBuild,
}

impl Fixture {
    fn new() -> Self {
        let user = NewUser {
            id: Uuid::new_v4(),
            username: "alice".to_owned(),
            email: "alice@example.com".to_owned(),
            status: UserStatus::Active,
            role: UserRole::TemplateAdmin,
            is_system: false,
            quiet_hours_schedule: Some("CRON_TZ=Europe/Berlin 0 2 * * *".to_owned()),
        };
        let template_id = Uuid::new_v4();
        let version = NewTemplateVersion {
            id: Uuid::new_v4(),
            template_id,
            name: "v1".to_owned(),
            message: "first".to_owned(),
            provisioner: ProvisionerKind::Simulated,
            source: serde_json::json!({ "build_secs": 5, "failure_rate": 0.0 }),
            created_at: Some(at(8)),
        };
        let template = NewTemplate {
            id: template_id,
            organization_id: DEFAULT_ORGANIZATION_ID,
            name: "rust".to_owned(),
            active_version_id: Some(version.id),
            deprecation_message: None,
            default_ttl_secs: 8 * 3600,
            activity_bump_secs: 3600,
            autostop_requirement_days: vec!["sat".to_owned()],
            autostop_requirement_weeks: 2,
            autostart_days: vec!["mon".to_owned(), "fri".to_owned()],
            user_autostart_enabled: true,
            user_autostop_enabled: false,
            failure_ttl_secs: 600,
            time_til_dormant_secs: 86_400,
            time_til_dormant_autodelete_secs: 0,
            require_active_version: true,
        };
        let preset = NewPreset {
            id: Uuid::new_v4(),
            template_version_id: version.id,
            name: "large".to_owned(),
            desired_instances: Some(2),
            expiration_ttl_secs: 3600,
            scheduling_timezone: "Europe/Berlin".to_owned(),
            schedule_lead_secs: 300,
            invalidated_at: None,
            prebuild_status: PrebuildStatus::Healthy,
            autoscale_min: Some(1),
            autoscale_max: Some(4),
            autoscale_window_secs: Some(600),
            autoscale_headroom: Some(1.5),
        };
        let workspace = NewWorkspace {
            id: Uuid::new_v4(),
            organization_id: DEFAULT_ORGANIZATION_ID,
            owner_id: user.id,
            template_id,
            name: "Dev".to_owned(),
            autostart_schedule: Some("CRON_TZ=Europe/Berlin 30 9 * * 1-5".to_owned()),
            ttl_secs: 3600,
            next_start_at: Some(at(7)),
            automatic_updates: AutomaticUpdates::Always,
            last_used_at: Some(at(9)),
            created_at: Some(at(9)),
        };
        let job = new_job(Transition::Start, false, at(9));
        let build = NewWorkspaceBuild {
            id: Uuid::new_v4(),
            workspace_id: workspace.id,
            build_number: 1,
            template_version_id: version.id,
            preset_id: Some(preset.id),
            transition: Transition::Start,
            reason: BuildReason::Initiator,
            initiator_id: user.id,
            job_id: job.id,
            deadline: Some(at(17)),
            max_deadline: Some(at(20)),
            provisioner_state: Some(vec![0, 159, 146, 150]),
            created_at: Some(at(9)),
        };
        Self { user, template, version, preset, workspace, job, build }
    }

    async fn insert(&self, conn: &mut AsyncPgConnection) {
        // The template names its active version before the version exists: the FK is
        // deferred to commit.
        conn.transaction::<_, DieselError, _>(async |conn| {
            diesel::insert_into(users::table).values(&self.user).execute(conn).await?;
            diesel::insert_into(templates::table).values(&self.template).execute(conn).await?;
            diesel::insert_into(template_versions::table)
                .values(&self.version)
                .execute(conn)
                .await?;
            diesel::insert_into(presets::table).values(&self.preset).execute(conn).await?;
            diesel::insert_into(workspaces::table).values(&self.workspace).execute(conn).await?;
            diesel::insert_into(provisioner_jobs::table).values(&self.job).execute(conn).await?;
            diesel::insert_into(workspace_builds::table).values(&self.build).execute(conn).await?;
            Ok(())
        })
        .await
        .expect("insert the fixture");
    }
}

fn new_job(
    transition: Transition,
    for_prebuild: bool,
    created_at: DateTime<Utc>,
) -> NewProvisionerJob {
    NewProvisionerJob {
        id: Uuid::new_v4(),
        organization_id: DEFAULT_ORGANIZATION_ID,
        input: serde_json::json!({}),
        for_prebuild,
        transition,
        created_at: Some(created_at),
    }
}

/// Assert that `result` failed on constraint `name` with the given kind.
fn assert_violates<T: std::fmt::Debug>(
    result: Result<T, DieselError>,
    kind: DatabaseErrorKind,
    name: &str,
) {
    match result {
        Err(DieselError::DatabaseError(actual, info)) => {
            assert_eq!(
                (format!("{actual:?}"), info.constraint_name()),
                (format!("{kind:?}"), Some(name)),
                "{}",
                info.message()
            );
        }
        other => panic!("expected a violation of {name}, got {other:?}"),
    }
}

async fn setup() -> (TestDatabase, Fixture) {
    let db = TestDatabase::new().await;
    let fixture = Fixture::new();
    let mut conn = db.conn().await;
    fixture.insert(&mut conn).await;
    drop(conn);
    (db, fixture)
}

#[tokio::test]
async fn every_row_type_round_trips() {
    let (db, f) = setup().await;
    let mut conn = db.conn().await;

    let template: Template = templates::table
        .find(f.template.id)
        .select(Template::as_select())
        .get_result(&mut conn)
        .await
        .expect("template");
    assert_eq!(template.active_version_id, Some(f.version.id));
    assert_eq!(template.autostop_requirement_days, f.template.autostop_requirement_days);
    assert_eq!(template.autostart_days, f.template.autostart_days);
    assert_eq!(template.default_ttl_secs, f.template.default_ttl_secs);
    assert!(
        template.require_active_version && !template.user_autostop_enabled && !template.deleted
    );

    let user: User = users::table
        .find(f.user.id)
        .select(User::as_select())
        .get_result(&mut conn)
        .await
        .expect("user");
    assert_eq!(
        (user.role, user.quiet_hours_schedule),
        (UserRole::TemplateAdmin, f.user.quiet_hours_schedule.clone())
    );

    let version: TemplateVersion = template_versions::table
        .find(f.version.id)
        .select(TemplateVersion::as_select())
        .get_result(&mut conn)
        .await
        .expect("version");
    assert_eq!(
        (version.provisioner, &version.source, version.created_at),
        (ProvisionerKind::Simulated, &f.version.source, at(8))
    );

    let preset: Preset = presets::table
        .find(f.preset.id)
        .select(Preset::as_select())
        .get_result(&mut conn)
        .await
        .expect("preset");
    assert_eq!(
        (preset.desired_instances, preset.prebuild_status, preset.last_error.as_deref()),
        (Some(2), PrebuildStatus::Healthy, None)
    );

    let workspace: Workspace = workspaces::table
        .find(f.workspace.id)
        .select(Workspace::as_select())
        .get_result(&mut conn)
        .await
        .expect("workspace");
    assert_eq!(
        (
            workspace.automatic_updates,
            workspace.next_start_at,
            workspace.last_used_at,
            workspace.dormant_at
        ),
        (AutomaticUpdates::Always, Some(at(7)), at(9), None)
    );

    let job: ProvisionerJob = provisioner_jobs::table
        .find(f.job.id)
        .select(ProvisionerJob::as_select())
        .get_result(&mut conn)
        .await
        .expect("job");
    assert_eq!(
        (job.status, job.transition, job.queue_priority, job.created_at),
        (JobStatus::Pending, Transition::Start, 1, at(9))
    );

    let build: WorkspaceBuild = workspace_builds::table
        .find(f.build.id)
        .select(WorkspaceBuild::as_select())
        .get_result(&mut conn)
        .await
        .expect("build");
    assert_eq!(
        (build.reason, build.deadline, build.max_deadline, &build.provisioner_state),
        (BuildReason::Initiator, Some(at(17)), Some(at(20)), &f.build.provisioner_state)
    );

    let agent = NewWorkspaceAgent {
        id: Uuid::new_v4(),
        build_id: f.build.id,
        name: "main".to_owned(),
        lifecycle_state: AgentLifecycle::Starting,
        auth_token_hash: Some("hash".to_owned()),
    };
    diesel::insert_into(workspace_agents::table)
        .values(&agent)
        .execute(&mut conn)
        .await
        .expect("agent");
    let loaded: WorkspaceAgent = workspace_agents::table
        .find(agent.id)
        .select(WorkspaceAgent::as_select())
        .get_result(&mut conn)
        .await
        .expect("agent");
    assert_eq!(loaded.lifecycle_state, AgentLifecycle::Starting);

    let parameter = PresetParameter {
        preset_id: f.preset.id,
        name: "region".to_owned(),
        value: "eu".to_owned(),
    };
    let schedule = PresetSchedule {
        id: Uuid::new_v4(),
        preset_id: f.preset.id,
        position: 0,
        cron: "* 8-18 * * 1-5".to_owned(),
        instances: 5,
    };
    diesel::insert_into(preset_parameters::table)
        .values(&parameter)
        .execute(&mut conn)
        .await
        .expect("parameter");
    diesel::insert_into(preset_schedules::table)
        .values(&schedule)
        .execute(&mut conn)
        .await
        .expect("schedule");
    let loaded: Vec<PresetParameter> = PresetParameter::belonging_to(&preset)
        .select(PresetParameter::as_select())
        .load(&mut conn)
        .await
        .expect("parameters");
    assert_eq!(loaded, vec![parameter]);
    let loaded: Vec<PresetSchedule> = PresetSchedule::belonging_to(&preset)
        .select(PresetSchedule::as_select())
        .load(&mut conn)
        .await
        .expect("schedules");
    assert_eq!(loaded, vec![schedule]);

    let token = NewApiToken {
        id: Uuid::new_v4(),
        user_id: f.user.id,
        name: "cli".to_owned(),
        secret_hash: "h1".to_owned(),
        expires_at: at(23),
    };
    diesel::insert_into(api_tokens::table).values(&token).execute(&mut conn).await.expect("token");
    let loaded: ApiToken = api_tokens::table
        .find(token.id)
        .select(ApiToken::as_select())
        .get_result(&mut conn)
        .await
        .expect("token");
    assert_eq!((loaded.expires_at, loaded.last_used_at), (at(23), None));

    let notification = NewNotification {
        id: Uuid::new_v4(),
        user_id: f.user.id,
        kind: "workspace_dormant".to_owned(),
        dedupe_key: format!("dormant:{}", f.workspace.id),
        payload: serde_json::json!({ "workspace": "Dev" }),
        created_at: None,
    };
    for _ in 0..2 {
        // A retried cycle enqueues the same notification again: it stays one row.
        diesel::insert_into(notifications::table)
            .values(&notification)
            .on_conflict(notifications::dedupe_key)
            .do_nothing()
            .execute(&mut conn)
            .await
            .expect("notification");
    }
    let loaded: Vec<Notification> = notifications::table
        .select(Notification::as_select())
        .load(&mut conn)
        .await
        .expect("notifications");
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].sent_at, None);

    let entry = NewAuditEntry {
        at: Some(at(10)),
        actor_id: None,
        actor: "lifecycle".to_owned(),
        action: "autostop".to_owned(),
        resource_type: "workspace".to_owned(),
        resource_id: Some(f.workspace.id),
        diff: serde_json::json!({ "transition": "stop" }),
    };
    let loaded: AuditEntry = diesel::insert_into(audit_log::table)
        .values(&entry)
        .returning(AuditEntry::as_returning())
        .get_result(&mut conn)
        .await
        .expect("audit entry");
    assert_eq!(
        (loaded.at, loaded.resource_id, loaded.diff),
        (at(10), entry.resource_id, entry.diff)
    );
}

#[tokio::test]
async fn a_negative_desired_instances_is_refused() {
    let (db, f) = setup().await;
    let result = diesel::update(presets::table.find(f.preset.id))
        .set(presets::desired_instances.eq(-1))
        .execute(&mut db.conn().await)
        .await;
    assert_violates(result, DatabaseErrorKind::CheckViolation, "presets_desired_instances_check");
}

/// rules §4 "Autoscale" settings are all set or none, with `max ≥ min`.
#[tokio::test]
async fn an_incomplete_or_inverted_autoscale_is_refused() {
    let (db, f) = setup().await;
    let mut conn = db.conn().await;
    let result = diesel::update(presets::table.find(f.preset.id))
        .set(presets::autoscale_headroom.eq(None::<f64>))
        .execute(&mut conn)
        .await;
    assert_violates(result, DatabaseErrorKind::CheckViolation, "presets_autoscale_complete");
    let result = diesel::update(presets::table.find(f.preset.id))
        .set(presets::autoscale_max.eq(Some(0)))
        .execute(&mut conn)
        .await;
    assert_violates(result, DatabaseErrorKind::CheckViolation, "presets_autoscale_complete");
    let none = diesel::update(presets::table.find(f.preset.id))
        .set((
            presets::autoscale_min.eq(None::<i32>),
            presets::autoscale_max.eq(None::<i32>),
            presets::autoscale_window_secs.eq(None::<i64>),
            presets::autoscale_headroom.eq(None::<f64>),
        ))
        .execute(&mut conn)
        .await;
    assert_eq!(none.expect("a fixed pool"), 1);
}

#[tokio::test]
async fn a_deadline_after_the_max_deadline_is_refused() {
    let (db, f) = setup().await;
    let result = diesel::update(workspace_builds::table.find(f.build.id))
        .set(workspace_builds::deadline.eq(at(21)))
        .execute(&mut db.conn().await)
        .await;
    assert_violates(result, DatabaseErrorKind::CheckViolation, "workspace_builds_deadline_check");
}

#[tokio::test]
async fn a_duplicate_build_number_is_refused() {
    let (db, f) = setup().await;
    let mut conn = db.conn().await;
    let job = new_job(Transition::Stop, false, at(10));
    diesel::insert_into(provisioner_jobs::table)
        .values(&job)
        .execute(&mut conn)
        .await
        .expect("job");
    let again = NewWorkspaceBuild {
        id: Uuid::new_v4(),
        job_id: job.id,
        transition: Transition::Stop,
        ..f.build.clone()
    };
    let result =
        diesel::insert_into(workspace_builds::table).values(&again).execute(&mut conn).await;
    assert_violates(
        result,
        DatabaseErrorKind::UniqueViolation,
        "workspace_builds_workspace_id_build_number_key",
    );
}

#[tokio::test]
async fn workspace_names_are_unique_per_owner_among_live_workspaces() {
    let (db, f) = setup().await;
    let mut conn = db.conn().await;
    let same_name = |owner_id| NewWorkspace {
        id: Uuid::new_v4(),
        owner_id,
        name: "dev".to_owned(),
        ..f.workspace.clone()
    };

    let result = diesel::insert_into(workspaces::table)
        .values(&same_name(f.user.id))
        .execute(&mut conn)
        .await;
    assert_violates(
        result,
        DatabaseErrorKind::UniqueViolation,
        "workspaces_owner_id_lower_name_key",
    );

    // Another owner may use the name, and so may the same owner once the first is deleted.
    diesel::insert_into(workspaces::table)
        .values(&same_name(PREBUILDS_USER_ID))
        .execute(&mut conn)
        .await
        .expect("other owner");
    diesel::update(workspaces::table.find(f.workspace.id))
        .set(workspaces::deleted.eq(true))
        .execute(&mut conn)
        .await
        .expect("delete");
    diesel::insert_into(workspaces::table)
        .values(&same_name(f.user.id))
        .execute(&mut conn)
        .await
        .expect("name reused");
}

#[tokio::test]
async fn template_day_lists_accept_only_weekday_abbreviations() {
    let (db, f) = setup().await;
    let result = diesel::update(templates::table.find(f.template.id))
        .set(templates::autostart_days.eq(vec!["mon".to_owned(), "monday".to_owned()]))
        .execute(&mut db.conn().await)
        .await;
    assert_violates(result, DatabaseErrorKind::CheckViolation, "templates_autostart_days_check");
}

#[tokio::test]
async fn the_active_version_must_belong_to_the_template() {
    let (db, f) = setup().await;
    let mut conn = db.conn().await;
    let other = NewTemplate {
        id: Uuid::new_v4(),
        name: "go".to_owned(),
        active_version_id: None,
        ..f.template.clone()
    };
    diesel::insert_into(templates::table)
        .values(&other)
        .execute(&mut conn)
        .await
        .expect("other template");
    let result = diesel::update(templates::table.find(other.id))
        .set(templates::active_version_id.eq(f.version.id))
        .execute(&mut conn)
        .await;
    assert_violates(
        result,
        DatabaseErrorKind::ForeignKeyViolation,
        "templates_active_version_fkey",
    );
}

#[tokio::test]
async fn a_finished_job_needs_a_completion_time() {
    let (db, f) = setup().await;
    let result = diesel::update(provisioner_jobs::table.find(f.job.id))
        .set(provisioner_jobs::status.eq(JobStatus::Succeeded))
        .execute(&mut db.conn().await)
        .await;
    assert_violates(
        result,
        DatabaseErrorKind::CheckViolation,
        "provisioner_jobs_completed_at_check",
    );
}

#[tokio::test]
async fn pending_jobs_come_out_people_first_then_deletes_then_oldest() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    // (label, transition, for_prebuild, created_at)
    let jobs = [
        ("prebuild create, oldest", Transition::Start, true, at(1)),
        ("prebuild delete", Transition::Delete, true, at(5)),
        ("person start, newer", Transition::Start, false, at(4)),
        ("person stop, older", Transition::Stop, false, at(3)),
        ("person delete", Transition::Delete, false, at(6)),
    ];
    let mut ids = Vec::new();
    for (label, transition, for_prebuild, created_at) in jobs {
        let job = new_job(transition, for_prebuild, created_at);
        ids.push((job.id, label));
        diesel::insert_into(provisioner_jobs::table)
            .values(&job)
            .execute(&mut conn)
            .await
            .expect("job");
    }
    let order: Vec<Uuid> = provisioner_jobs::table
        .filter(provisioner_jobs::status.eq(JobStatus::Pending))
        .order((
            provisioner_jobs::queue_priority,
            provisioner_jobs::created_at,
            provisioner_jobs::id,
        ))
        .select(provisioner_jobs::id)
        .load(&mut conn)
        .await
        .expect("pending jobs");
    let labels: Vec<&str> = order
        .iter()
        .filter_map(|id| ids.iter().find(|(job, _)| job == id).map(|(_, label)| *label))
        .collect();
    assert_eq!(
        labels,
        [
            "person delete",
            "person stop, older",
            "person start, newer",
            "prebuild delete",
            "prebuild create, oldest"
        ]
    );
}

/// The next notification on `conn`'s LISTENed channels, as (channel, payload).
async fn next_notification(conn: &mut AsyncPgConnection) -> (String, String) {
    let mut stream = std::pin::pin!(conn.notifications_stream());
    let notification =
        stream.next().await.expect("notification stream ended").expect("notification");
    (notification.channel, notification.payload)
}

/// Notifications from another transaction, in commit order, serve as a marker: what arrives
/// before it was committed before it. No waiting on time.
async fn notify_marker(conn: &mut AsyncPgConnection, channel: &str) {
    diesel::sql_query(format!("NOTIFY {channel}, 'marker'")).execute(conn).await.expect("marker");
}

#[tokio::test]
async fn a_new_job_is_announced_at_commit_not_before() {
    let db = TestDatabase::new().await;
    let mut listener = AsyncPgConnection::establish(db.url()).await.expect("listener");
    diesel::sql_query(format!("LISTEN {JOB_CHANNEL}"))
        .execute(&mut listener)
        .await
        .expect("listen");
    // Plain connections: a pooled one would go back to the pool inside BEGIN on a failure.
    let mut writer = AsyncPgConnection::establish(db.url()).await.expect("writer");
    let mut other = AsyncPgConnection::establish(db.url()).await.expect("other");
    let job = new_job(Transition::Start, false, at(9));

    diesel::sql_query("BEGIN").execute(&mut writer).await.expect("begin");
    diesel::insert_into(provisioner_jobs::table)
        .values(&job)
        .execute(&mut writer)
        .await
        .expect("job");
    notify_marker(&mut other, JOB_CHANNEL).await;
    assert_eq!(
        next_notification(&mut listener).await,
        (JOB_CHANNEL.to_owned(), "marker".to_owned())
    );
    diesel::sql_query("COMMIT").execute(&mut writer).await.expect("commit");
    assert_eq!(
        next_notification(&mut listener).await,
        (JOB_CHANNEL.to_owned(), job.id.to_string())
    );
}

#[tokio::test]
async fn preset_changes_wake_the_reconciler_but_its_own_status_writes_do_not() {
    let (db, f) = setup().await;
    let mut listener = AsyncPgConnection::establish(db.url()).await.expect("listener");
    diesel::sql_query(format!("LISTEN {PRESET_CHANNEL}"))
        .execute(&mut listener)
        .await
        .expect("listen");
    let mut conn = db.conn().await;

    diesel::update(presets::table.find(f.preset.id))
        .set(presets::prebuild_status.eq(PrebuildStatus::HardLimited))
        .execute(&mut conn)
        .await
        .expect("status write");
    notify_marker(&mut conn, PRESET_CHANNEL).await;
    assert_eq!(
        next_notification(&mut listener).await,
        (PRESET_CHANNEL.to_owned(), "marker".to_owned())
    );

    diesel::update(presets::table.find(f.preset.id))
        .set(presets::desired_instances.eq(3))
        .execute(&mut conn)
        .await
        .expect("desired instances");
    assert_eq!(
        next_notification(&mut listener).await,
        (PRESET_CHANNEL.to_owned(), "presets".to_owned())
    );

    diesel::update(settings::table.find(poolkeeper::db::RECONCILIATION_PAUSED_KEY))
        .set(settings::value.eq(serde_json::Value::Bool(true)))
        .execute(&mut conn)
        .await
        .expect("pause");
    assert_eq!(
        next_notification(&mut listener).await,
        (PRESET_CHANNEL.to_owned(), "settings".to_owned())
    );
}

/// A prebuild job that ends is heard of from the change feed (rules §8), not by a NOTIFY: a
/// NOTIFY makes every committing notifier wait its turn for one database-wide lock and wakes
/// every listening connection of the database, on every job's end.
#[tokio::test]
async fn a_prebuild_job_that_ends_notifies_no_one() {
    let (db, _) = setup().await;
    let mut listener = AsyncPgConnection::establish(db.url()).await.expect("listener");
    diesel::sql_query(format!("LISTEN {PRESET_CHANNEL}"))
        .execute(&mut listener)
        .await
        .expect("listen");
    let mut conn = db.conn().await;
    let job = new_job(Transition::Start, true, at(9));
    diesel::insert_into(provisioner_jobs::table)
        .values(&job)
        .execute(&mut conn)
        .await
        .expect("job");

    for set in
        ["status = 'running', started_at = now()", "status = 'succeeded', completed_at = now()"]
    {
        diesel::sql_query(format!("UPDATE provisioner_jobs SET {set} WHERE id = $1"))
            .bind::<diesel::sql_types::Uuid, _>(job.id)
            .execute(&mut conn)
            .await
            .expect("job status");
    }
    notify_marker(&mut conn, PRESET_CHANNEL).await;
    assert_eq!(
        next_notification(&mut listener).await,
        (PRESET_CHANNEL.to_owned(), "marker".to_owned()),
        "the job's end sent a notification"
    );
}
