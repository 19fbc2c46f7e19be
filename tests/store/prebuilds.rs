//! The prebuild store against a real PostgreSQL: snapshot loading, plan application and
//! the races the appliers must lose gracefully.

use poolkeeper_tests::seed;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use poolkeeper::db::enums::JobStatus;
use poolkeeper::db::schema::{presets, workspaces};
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::store::prebuilds::{apply_preset_plan, load_prebuild_snapshot};
use poolkeeper_core::prebuilds::{plan, Action, PrebuildSnapshot, PresetPlan};
use poolkeeper_core::replay::ReplayInput;
use seed::{t, WorkspaceSeed, CONFIG};
use uuid::Uuid;

fn now() -> DateTime<Utc> {
    t("2025-06-02T09:00:00Z")
}

async fn snapshot(conn: &mut AsyncPgConnection, at: DateTime<Utc>) -> PrebuildSnapshot {
    load_prebuild_snapshot(conn, at, CONFIG).await.expect("load snapshot").snapshot
}

async fn plan_of(
    conn: &mut AsyncPgConnection,
    at: DateTime<Utc>,
    preset_id: Uuid,
) -> (PrebuildSnapshot, PresetPlan) {
    let snap = snapshot(conn, at).await;
    let plans = plan(at, &snap);
    let found = plans.into_iter().find(|p| p.preset_id == preset_id).expect("preset planned");
    (snap, found)
}

/// Applies every plan of the snapshot; returns the job ids.
async fn reconcile(db: &TestDatabase, at: DateTime<Utc>) -> Vec<Uuid> {
    let mut conn = db.conn().await;
    let snap = snapshot(&mut conn, at).await;
    let mut jobs = Vec::new();
    for (preset, preset_plan) in snap.presets.iter().zip(plan(at, &snap)) {
        jobs.extend(
            apply_preset_plan(
                db.pool(),
                &seed::lead(db, "prebuilds").await,
                at,
                preset,
                &preset_plan,
            )
            .await
            .expect("apply"),
        );
    }
    jobs
}

const LIVE_PREBUILDS: &str = "SELECT count(*) AS n FROM workspaces
    WHERE owner_id = 'c42fdf75-3097-471c-8c33-fb52454d81c0' AND NOT deleted";

#[tokio::test]
async fn snapshot_round_trips_through_a_replay_file() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template_id, version_id) = seed::template(&mut conn, "go").await;
    let preset_id = seed::preset(&mut conn, version_id, "small", 3).await;
    let created = t("2025-06-02T08:00:00Z");
    seed::workspace(
        &mut conn,
        WorkspaceSeed::prebuild(template_id, version_id, preset_id, created),
    )
    .await;
    seed::workspace(
        &mut conn,
        WorkspaceSeed {
            status: JobStatus::Pending,
            ready: false,
            ..WorkspaceSeed::prebuild(template_id, version_id, preset_id, created)
        },
    )
    .await;

    let snap = snapshot(&mut conn, now()).await;
    assert_eq!(snap.presets.len(), 1);
    assert_eq!(snap.running.len(), 1);
    assert_eq!(snap.in_progress.len(), 1);
    assert_eq!(snap.recent_builds.len(), 1);

    let mut input = ReplayInput::new(now());
    input.prebuilds = Some(snap.clone());
    let text = serde_json::to_string_pretty(&input).expect("serialize replay");
    let parsed = poolkeeper_core::parse_replay(&text).expect("parse replay");
    let replayed = poolkeeper_core::run_replay(&parsed).prebuilds.expect("prebuild decisions");
    let direct = plan(now(), &snap);
    assert_eq!(replayed, direct);
    assert_eq!(direct[0].actions, vec![Action::Create { count: 1 }]);
}

#[tokio::test]
async fn creates_then_noop_then_replaces_the_pool_of_an_old_version() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template_id, version_id) = seed::template(&mut conn, "go").await;
    seed::preset(&mut conn, version_id, "small", 2).await;

    let jobs = reconcile(&db, now()).await;
    assert_eq!(jobs.len(), 2);
    assert_eq!(seed::count(&mut conn, LIVE_PREBUILDS).await, 2);
    // Not yet finished: the starting builds count, nothing more is created.
    assert!(reconcile(&db, now()).await.is_empty());

    seed::complete_pending_jobs(&mut conn, now()).await;
    assert!(reconcile(&db, now()).await.is_empty(), "a full pool is a no-op");

    let v2 = seed::version(&mut conn, template_id, "v2").await;
    seed::preset(&mut conn, v2, "small", 2).await;
    let later = t("2025-06-02T09:05:00Z");
    let jobs = reconcile(&db, later).await;
    assert_eq!(jobs.len(), 4, "two deletes of the old pool, two creates of the new");
    seed::complete_pending_jobs(&mut conn, later).await;
    assert_eq!(seed::count(&mut conn, LIVE_PREBUILDS).await, 2);
    let on_v2 = format!(
        "SELECT count(*) AS n FROM workspaces w JOIN workspace_builds b ON b.workspace_id = w.id
          WHERE NOT w.deleted AND b.template_version_id = '{v2}'"
    );
    assert_eq!(seed::count(&mut conn, &on_v2).await, 2);
    assert!(reconcile(&db, later).await.is_empty());
}

#[tokio::test]
async fn pending_first_builds_of_an_old_version_are_canceled_and_deleted() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template_id, version_id) = seed::template(&mut conn, "go").await;
    let preset_id = seed::preset(&mut conn, version_id, "small", 2).await;
    assert_eq!(reconcile(&db, now()).await.len(), 2);
    seed::version(&mut conn, template_id, "v2").await;

    let (snap, old) = plan_of(&mut conn, now(), preset_id).await;
    assert_eq!(old.actions, vec![Action::CancelPending]);
    let preset = snap.presets.iter().find(|p| p.id == preset_id).expect("old preset");
    let jobs =
        apply_preset_plan(db.pool(), &seed::lead(&db, "prebuilds").await, now(), preset, &old)
            .await
            .expect("apply");
    assert_eq!(jobs.len(), 2, "a delete per canceled workspace");
    let canceled = "SELECT count(*) AS n FROM provisioner_jobs WHERE status = 'canceled'";
    assert_eq!(seed::count(&mut conn, canceled).await, 2);
    seed::complete_pending_jobs(&mut conn, now()).await;
    assert_eq!(seed::count(&mut conn, LIVE_PREBUILDS).await, 0);
}

#[tokio::test]
async fn a_job_already_running_is_not_canceled() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template_id, version_id) = seed::template(&mut conn, "go").await;
    let preset_id = seed::preset(&mut conn, version_id, "small", 1).await;
    let pending = WorkspaceSeed {
        status: JobStatus::Pending,
        ready: false,
        ..WorkspaceSeed::prebuild(template_id, version_id, preset_id, now())
    };
    seed::workspace(&mut conn, pending).await;
    seed::version(&mut conn, template_id, "v2").await;
    let (snap, old) = plan_of(&mut conn, now(), preset_id).await;
    assert_eq!(old.actions, vec![Action::CancelPending]);

    // A provisioner acquires the job between the snapshot and the cancel.
    diesel::sql_query("UPDATE provisioner_jobs SET status = 'running', started_at = now()")
        .execute(&mut conn)
        .await
        .expect("acquire");
    let preset = snap.presets.iter().find(|p| p.id == preset_id).expect("old preset");
    let jobs =
        apply_preset_plan(db.pool(), &seed::lead(&db, "prebuilds").await, now(), preset, &old)
            .await
            .expect("apply");
    assert!(jobs.is_empty());
    let running = "SELECT count(*) AS n FROM provisioner_jobs WHERE status = 'running'";
    assert_eq!(seed::count(&mut conn, running).await, 1);
}

#[tokio::test]
async fn a_claim_before_the_delete_wins() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template_id, version_id) = seed::template(&mut conn, "go").await;
    let preset_id = seed::preset(&mut conn, version_id, "small", 0).await;
    let ws = seed::workspace(
        &mut conn,
        WorkspaceSeed::prebuild(template_id, version_id, preset_id, now()),
    )
    .await;
    let (snap, to_delete) = plan_of(&mut conn, now(), preset_id).await;
    assert_eq!(to_delete.actions, vec![Action::Delete { workspace_ids: vec![ws] }]);

    let alice = seed::user(&mut conn, "alice").await;
    diesel::update(workspaces::table.find(ws))
        .set(workspaces::owner_id.eq(alice))
        .execute(&mut conn)
        .await
        .expect("claim");
    let jobs = apply_preset_plan(
        db.pool(),
        &seed::lead(&db, "prebuilds").await,
        now(),
        &snap.presets[0],
        &to_delete,
    )
    .await
    .expect("apply");
    assert!(jobs.is_empty(), "the claimed workspace is not deleted");
    let deletes = "SELECT count(*) AS n FROM workspace_builds WHERE transition = 'delete'";
    assert_eq!(seed::count(&mut conn, deletes).await, 0);
}

#[tokio::test]
async fn hard_limit_status_is_stored() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template_id, version_id) = seed::template(&mut conn, "go").await;
    let preset_id = seed::preset(&mut conn, version_id, "small", 1).await;
    for minute in 0..3 {
        let at = t("2025-06-02T08:50:00Z") + chrono::Duration::minutes(minute);
        let failed = WorkspaceSeed {
            status: JobStatus::Failed,
            ..WorkspaceSeed::prebuild(template_id, version_id, preset_id, at)
        };
        seed::workspace(&mut conn, failed).await;
    }
    reconcile(&db, now()).await;
    let status: String = presets::table
        .find(preset_id)
        .select(diesel::dsl::sql::<diesel::sql_types::Text>("prebuild_status"))
        .first(&mut conn)
        .await
        .expect("status");
    assert_eq!(status, "hard_limited");
}

/// rules §4 "Failed prebuilds" against the database: of five failed prebuilds and one
/// running one, the newest failed one is kept (keep 1), the one the hard limit still reads
/// stays, and the three older ones get delete builds, once; after the deletes ran the plan
/// is a fixed point, and later too (the hard limit still reads the one it kept).
#[tokio::test]
async fn old_failed_prebuilds_are_deleted_and_the_newest_kept() {
    use poolkeeper_core::prebuilds::ReconcilerConfig;
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template_id, version_id) = seed::template(&mut conn, "go").await;
    let preset_id = seed::preset(&mut conn, version_id, "small", 1).await;
    let config = ReconcilerConfig { failed_keep: 1, failed_grace_secs: 1800, ..CONFIG };
    let at = |time: &str| t(&format!("2025-06-02T{time}:00Z"));
    seed::workspace(
        &mut conn,
        WorkspaceSeed::prebuild(template_id, version_id, preset_id, at("08:00")),
    )
    .await;
    let mut failed = Vec::new();
    for time in ["08:30", "07:30", "05:00", "04:00", "03:00"] {
        let seed = WorkspaceSeed {
            status: JobStatus::Failed,
            ..WorkspaceSeed::prebuild(template_id, version_id, preset_id, at(time))
        };
        failed.push(seed::workspace(&mut conn, seed).await);
    }
    let cycle = async |conn: &mut AsyncPgConnection, now: DateTime<Utc>| {
        let snap = load_prebuild_snapshot(conn, now, config).await.expect("load").snapshot;
        let plans = plan(now, &snap);
        let fence = seed::lead(&db, "prebuilds").await;
        let mut jobs = Vec::new();
        for (preset, preset_plan) in snap.presets.iter().zip(&plans) {
            jobs.extend(
                apply_preset_plan(db.pool(), &fence, now, preset, preset_plan)
                    .await
                    .expect("apply"),
            );
        }
        (snap, plans, jobs)
    };

    let (snap, plans, jobs) = cycle(&mut conn, now()).await;
    assert_eq!(snap.failed.len(), 5, "every failed prebuild is loaded");
    assert_eq!(plans[0].actions, vec![Action::Delete { workspace_ids: failed[2..].to_vec() }]);
    assert_eq!(jobs.len(), 3);
    let deletes = "SELECT count(*) AS n FROM workspace_builds WHERE transition = 'delete'";
    assert_eq!(seed::count(&mut conn, deletes).await, 3);
    // While the deletes are in flight, nothing is deleted twice.
    assert!(cycle(&mut conn, now()).await.2.is_empty());

    seed::complete_pending_jobs(&mut conn, now()).await;
    assert_eq!(seed::count(&mut conn, LIVE_PREBUILDS).await, 3, "one running, two failed kept");
    let (snap, plans, jobs) = cycle(&mut conn, now()).await;
    assert_eq!(snap.failed.iter().map(|f| f.workspace_id).collect::<Vec<_>>().len(), 2);
    assert!(jobs.is_empty(), "{:?}", plans[0]);
    // Hours later, 07:30 is outside the lookback but still among the hard limit's 3 newest.
    assert!(cycle(&mut conn, t("2025-06-02T12:00:00Z")).await.2.is_empty());
}

/// rules §4 "Autoscale" against the database: the claims of an autoscaled preset are the
/// hand-over build of a claimed prebuild and the first build of a fresh workspace of it, not
/// a later start of the same workspace, a claim two windows old, nor another preset's; the
/// pool grows at once to ceil(2 × 1.5) = 3 and comes down a window after the burst.
#[tokio::test]
async fn claims_of_an_autoscaled_preset_size_its_pool() {
    use diesel::sql_types::Uuid as SqlUuid;
    use poolkeeper::db::enums::Transition;
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template_id, version_id) = seed::template(&mut conn, "go").await;
    let scaled = seed::preset(&mut conn, version_id, "scaled", 0).await;
    let fixed = seed::preset(&mut conn, version_id, "fixed", 0).await;
    diesel::sql_query(
        "UPDATE presets SET autoscale_min = 1, autoscale_max = 5, autoscale_window_secs = 600,
           autoscale_headroom = 1.5 WHERE id = $1",
    )
    .bind::<SqlUuid, _>(scaled)
    .execute(&mut conn)
    .await
    .expect("autoscale");
    let alice = seed::user(&mut conn, "alice").await;
    let at = |time: &str| t(&format!("2025-06-02T{time}:00Z"));
    let fresh_of = |preset_id: Uuid, created_at| WorkspaceSeed {
        preset_id: Some(preset_id),
        ..WorkspaceSeed::owned(alice, template_id, version_id, Transition::Start, created_at)
    };
    // A fresh workspace (a claim), later stopped and started again (not claims).
    let fresh = seed::workspace(&mut conn, fresh_of(scaled, at("08:55"))).await;
    let again = |transition| WorkspaceSeed { transition, ..fresh_of(scaled, at("08:58")) };
    seed::build(&mut conn, fresh, 2, &again(Transition::Stop)).await;
    seed::build(&mut conn, fresh, 3, &again(Transition::Start)).await;
    // A claimed prebuild: built by the system user, handed over at 08:57.
    let claimed = seed::workspace(
        &mut conn,
        WorkspaceSeed::prebuild(template_id, version_id, scaled, at("08:00")),
    )
    .await;
    seed::build(&mut conn, claimed, 2, &fresh_of(scaled, at("08:57"))).await;
    diesel::update(workspaces::table.find(claimed))
        .set(workspaces::owner_id.eq(alice))
        .execute(&mut conn)
        .await
        .expect("hand over");
    // Two windows old, and of a preset without autoscale: not loaded.
    seed::workspace(&mut conn, fresh_of(scaled, at("08:39"))).await;
    seed::workspace(&mut conn, fresh_of(fixed, at("08:59"))).await;

    let (snap, planned) = plan_of(&mut conn, now(), scaled).await;
    let mut claims: Vec<(Uuid, DateTime<Utc>)> =
        snap.claims.iter().map(|c| (c.workspace_id, c.at)).collect();
    claims.sort();
    let mut expected = vec![(fresh, at("08:55")), (claimed, at("08:57"))];
    expected.sort();
    assert_eq!(claims, expected);
    assert_eq!(planned.state.desired, 3, "{planned:?}");
    assert!(planned.target.starts_with("autoscale (peak 2 claims"), "{}", planned.target);
    assert_eq!(planned.actions, vec![Action::Create { count: 3 }]);
    assert_eq!(planned.next_check_at, Some(at("09:15")), "the first claim leaves the hysteresis");
    assert_eq!(plan_of(&mut conn, at("09:15"), scaled).await.1.state.desired, 2);
    assert_eq!(plan_of(&mut conn, at("09:17"), scaled).await.1.state.desired, 1);
    assert_eq!(plan_of(&mut conn, now(), fixed).await.1.state.desired, 0);
}

/// Counts the statements a connection sends.
#[derive(Clone, Default)]
struct QueryCounter(Arc<AtomicUsize>);

impl Instrumentation for QueryCounter {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::StartQuery { .. } = event {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn queries_for_load(presets_count: usize) -> usize {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template_id, version_id) = seed::template(&mut conn, "go").await;
    let new: Vec<_> =
        (0..presets_count).map(|i| seed::new_preset(version_id, &format!("p{i}"), 1)).collect();
    diesel::insert_into(presets::table).values(&new).execute(&mut conn).await.expect("presets");
    for preset in new.iter().take(3) {
        seed::workspace(
            &mut conn,
            WorkspaceSeed::prebuild(template_id, version_id, preset.id, now()),
        )
        .await;
    }
    let mut fresh = AsyncPgConnection::establish(db.url()).await.expect("connect");
    let counter = QueryCounter::default();
    fresh.set_instrumentation(counter.clone());
    let loaded = load_prebuild_snapshot(&mut fresh, now(), CONFIG).await.expect("load");
    assert_eq!(loaded.snapshot.presets.len(), presets_count);
    AtomicUsize::load(&counter.0, Ordering::Relaxed)
}

#[tokio::test]
async fn snapshot_round_trips_do_not_grow_with_presets() {
    let one = queries_for_load(1).await;
    let many = queries_for_load(1000).await;
    assert_eq!(one, many);
    assert!(one <= 8, "a handful of statements, got {one}");
}

/// A fill larger than one statement can carry (PostgreSQL takes at most 65,535 bind
/// parameters; a workspace row binds 9 of them, a build 10): created in chunks,
/// all in one transaction, one audit entry per workspace.
#[tokio::test]
async fn a_fill_beyond_one_statements_parameter_limit_is_created_in_chunks() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (_, version_id) = seed::template(&mut conn, "go").await;
    seed::preset(&mut conn, version_id, "huge", 7_500).await;
    let jobs = reconcile(&db, now()).await;
    assert_eq!(jobs.len(), 7_500);
    let live = "SELECT count(*) AS n FROM workspaces WHERE NOT deleted";
    assert_eq!(seed::count(&mut conn, live).await, 7_500);
    let audits = "SELECT count(*) AS n FROM audit_log WHERE action = 'prebuild_create'";
    assert_eq!(seed::count(&mut conn, audits).await, 7_500);
}

/// Every preset field the loader reads, set to a value other than its default in the
/// database, loaded into a snapshot and compared whole: schedules (in position order),
/// time zone, lead time, expiration TTL, invalidation, status, the template's deletion and
/// deprecation, and whether the version is the active one.
#[tokio::test]
async fn every_preset_field_the_loader_reads_is_loaded() {
    use poolkeeper_core::prebuilds::{Autoscale, Preset, PresetSchedule, PresetStatus};
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template_id, v1) = seed::template(&mut conn, "go").await;
    let old = seed::preset(&mut conn, v1, "old", 1).await;
    let v2 = seed::version(&mut conn, template_id, "v2").await;
    let full = seed::preset(&mut conn, v2, "full", 3).await;
    let (gone_template, gone_version) = seed::template(&mut conn, "gone").await;
    let gone = seed::preset(&mut conn, gone_version, "gone", 2).await;
    let invalidated = t("2025-06-01T12:00:00Z");
    diesel::sql_query(
        "UPDATE presets SET expiration_ttl_secs = 7200, scheduling_timezone = 'Europe/Berlin',
           schedule_lead_secs = 600, invalidated_at = $2, prebuild_status = 'hard_limited',
           autoscale_min = 2, autoscale_max = 9, autoscale_window_secs = 1800,
           autoscale_headroom = 1.25
         WHERE id = $1",
    )
    .bind::<diesel::sql_types::Uuid, _>(full)
    .bind::<diesel::sql_types::Timestamptz, _>(invalidated)
    .execute(&mut conn)
    .await
    .expect("preset fields");
    // Inserted out of order: the loader returns them by position.
    diesel::sql_query(
        "INSERT INTO preset_schedules (id, preset_id, position, cron, instances) VALUES
           (gen_random_uuid(), $1, 1, '0 18-20 * * 1-5', 1),
           (gen_random_uuid(), $1, 0, '0 8-17 * * 1-5', 5)",
    )
    .bind::<diesel::sql_types::Uuid, _>(full)
    .execute(&mut conn)
    .await
    .expect("schedules");
    diesel::sql_query(
        "UPDATE templates SET deleted = true, deprecation_message = 'use go' WHERE id = $1",
    )
    .bind::<diesel::sql_types::Uuid, _>(gone_template)
    .execute(&mut conn)
    .await
    .expect("template fields");

    // Presets of an old version or a deleted template are loaded while they have prebuilds
    // (their pools drain).
    for (template, version, preset) in [(template_id, v1, old), (gone_template, gone_version, gone)]
    {
        let seed = WorkspaceSeed::prebuild(template, version, preset, t("2025-06-01T09:00:00Z"));
        seed::workspace(&mut conn, seed).await;
    }

    let snap = snapshot(&mut conn, now()).await;
    let loaded = |id: Uuid| snap.presets.iter().find(|p| p.id == id).cloned();
    let expected_full = Preset {
        id: full,
        name: "full".to_owned(),
        template_id,
        template_version_id: v2,
        using_active_version: true,
        template_deleted: false,
        template_deprecated: false,
        desired_instances: 3,
        expiration_ttl_secs: 7200,
        scheduling_timezone: "Europe/Berlin".to_owned(),
        schedules: vec![
            PresetSchedule { cron: "0 8-17 * * 1-5".to_owned(), instances: 5 },
            PresetSchedule { cron: "0 18-20 * * 1-5".to_owned(), instances: 1 },
        ],
        schedule_lead_secs: 600,
        invalidated_at: Some(invalidated),
        status: PresetStatus::HardLimited,
        autoscale: Some(Autoscale { min: 2, max: 9, window_secs: 1800, headroom: 1.25 }),
    };
    assert_eq!(loaded(full), Some(expected_full));
    let old_loaded = loaded(old).expect("a preset of an old version with a pool is loaded");
    assert!(!old_loaded.using_active_version, "{old_loaded:?}");
    assert_eq!(old_loaded.template_version_id, v1);
    assert_eq!(old_loaded.schedules, vec![]);
    assert_eq!(old_loaded.invalidated_at, None);
    let gone_loaded = loaded(gone).expect("a preset of a deleted template with a pool is loaded");
    assert!(gone_loaded.template_deleted && gone_loaded.template_deprecated, "{gone_loaded:?}");
    assert_eq!(gone_loaded.template_id, gone_template);
}
