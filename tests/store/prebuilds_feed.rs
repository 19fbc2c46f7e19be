//! The change feed against full reloads (rules §8). Random writes to everything the prebuild
//! snapshot reads run in three concurrent transactions that commit (or roll back) in random
//! order, so transactions that took their id first often commit last. After every refresh,
//! the kept snapshot must equal a full reload at the same instant, and the plans kept
//! incrementally (only changed or due presets planned again) must equal a full plan.

use poolkeeper_tests::rng::Rng;
use poolkeeper_tests::seed;

use chrono::{DateTime, Duration, Utc};
use diesel::sql_types::{Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel::QueryResult;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use poolkeeper::daemon::KeptPlans;
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::db::{DEFAULT_ORGANIZATION_ID, PREBUILDS_USER_ID};
use poolkeeper::store::leases;
use poolkeeper::store::prebuilds::{load_prebuild_snapshot, PrebuildFeed, Refreshed};
use poolkeeper_core::prebuilds::{plan, PresetPlan, ReconcilerConfig};
use seed::t;
use uuid::Uuid;

const WRITERS: usize = 3;

/// Backoff and the hard limit look back a short while, so that failures age out of the
/// lookback during a run; failed prebuilds are cleaned up after a grace.
const CONFIG: ReconcilerConfig = ReconcilerConfig {
    backoff_interval_secs: 120,
    backoff_lookback_secs: 1800,
    failure_hard_limit: 3,
    max_pending_creates_per_preset: 0,
    failed_keep: 1,
    failed_grace_secs: 900,
};

/// What the writers may touch.
struct World {
    templates: Vec<(Uuid, Vec<Uuid>)>,
    /// (template, version, preset)
    presets: Vec<(Uuid, Uuid, Uuid)>,
    person: Uuid,
    workspaces: Vec<(Uuid, Uuid)>,
}

struct Writer {
    conn: AsyncPgConnection,
    /// The step at which its open transaction wrote first, if one is open.
    open_since: Option<usize>,
}

#[derive(Default, Debug)]
struct Counts {
    writes: usize,
    failed_writes: usize,
    commits: usize,
    rollbacks: usize,
    /// Commits of a transaction while an older one (by first write) was still open.
    out_of_order: usize,
    refreshes: usize,
    full_refreshes: usize,
    /// Refreshes that found changed presets, and plans they made.
    incremental_changes: usize,
    replanned: usize,
    /// Plans kept from an earlier cycle that a full plan confirmed.
    kept_plans_checked: usize,
}

#[tokio::test]
async fn the_kept_snapshot_and_plans_equal_a_full_reload_after_random_concurrent_changes() {
    let db = TestDatabase::new().await;
    let mut setup = db.conn().await;
    let world = &mut world(&mut setup).await;
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let mut conn = AsyncPgConnection::establish(db.url()).await.expect("writer connection");
        // Two writers wanting the same row: one gives up at once instead of the test's single
        // task waiting on itself.
        exec(&mut conn, "SET lock_timeout = '20ms'").await.expect("lock_timeout");
        writers.push(Writer { conn, open_since: None });
    }
    let mut reader = db.conn().await;
    let mut feed = PrebuildFeed::new(CONFIG);
    let mut plans = KeptPlans::default();
    let mut counts = Counts::default();
    let seed: u64 = std::env::var("POOLKEEPER_FEED_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f00d);
    let mut rng = Rng::new(seed);
    let mut now = t("2025-06-02T09:00:00Z");
    for step in 0..600 {
        match rng.below(10) {
            0..=5 => {
                let w = rng.below(WRITERS as u64) as usize;
                let writer = &mut writers[w];
                if writer.open_since.is_none() {
                    exec(&mut writer.conn, "BEGIN").await.expect("begin");
                    writer.open_since = Some(step);
                }
                counts.writes += 1;
                if let Err(err) = random_write(&mut writer.conn, world, &mut rng, now).await {
                    // A lock wait given up, a duplicate build number: this transaction is
                    // done for, as it would be in production.
                    tracing::debug!(%err, "write failed; rolling back");
                    counts.failed_writes += 1;
                    end(writer, "ROLLBACK", &mut counts, &[]).await;
                }
            }
            6..=7 => {
                let open: Vec<usize> =
                    (0..WRITERS).filter(|w| writers[*w].open_since.is_some()).collect();
                if open.is_empty() {
                    continue;
                }
                let w = rng.pick(&open);
                let others: Vec<usize> = open
                    .iter()
                    .filter(|o| **o != w)
                    .filter_map(|o| writers[*o].open_since)
                    .collect();
                let how = if rng.below(5) == 0 { "ROLLBACK" } else { "COMMIT" };
                end(&mut writers[w], how, &mut counts, &others).await;
            }
            _ => {
                now += Duration::seconds(rng.below(900) as i64);
                let full = rng.below(25) == 0;
                check(&mut feed, &mut plans, &mut reader, now, full, &mut counts).await;
            }
        }
    }
    for writer in &mut writers {
        if writer.open_since.is_some() {
            end(writer, "COMMIT", &mut counts, &[]).await;
        }
    }
    check(&mut feed, &mut plans, &mut reader, now, false, &mut counts).await;
    eprintln!("seed {seed}: {counts:?}");
    // The run reached what it is about: out-of-order commits, incremental refreshes that
    // planned only some presets, and plans kept across cycles.
    assert!(counts.commits >= 50, "{counts:?}");
    assert!(counts.out_of_order >= 10, "{counts:?}");
    assert!(counts.incremental_changes >= 20, "{counts:?}");
    assert!(counts.kept_plans_checked >= 100, "{counts:?}");
    assert!(counts.failed_writes > 0, "{counts:?}");
}

/// Refreshes, then compares the kept snapshot and plans with a full reload and plan.
async fn check(
    feed: &mut PrebuildFeed,
    plans: &mut KeptPlans,
    reader: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    full: bool,
    counts: &mut Counts,
) {
    let refreshed = feed.refresh(reader, now, full).await.expect("refresh");
    counts.refreshes += 1;
    match &refreshed {
        Refreshed::Full => counts.full_refreshes += 1,
        Refreshed::Presets(changed) if !changed.is_empty() => counts.incremental_changes += 1,
        Refreshed::Presets(_) => {}
    }
    let (_, replanned) = plans.replan(feed.kept(), refreshed, now);
    counts.replanned += replanned.len();
    let kept = feed.kept().assemble(None, now);
    let full_load = load_prebuild_snapshot(reader, now, CONFIG).await.expect("full load");
    assert_eq!(kept.snapshot, full_load.snapshot, "kept snapshot at {now}");
    assert_eq!(kept.names, full_load.names, "names at {now}");
    let mut want: Vec<PresetPlan> = plan(now, &full_load.snapshot);
    want.sort_unstable_by_key(|p| p.preset_id);
    let got: Vec<PresetPlan> = plans.sorted().into_iter().cloned().collect();
    assert_eq!(got, want, "kept plans at {now}");
    counts.kept_plans_checked += want.len().saturating_sub(replanned.len());
}

async fn end(writer: &mut Writer, how: &str, counts: &mut Counts, others: &[usize]) {
    exec(&mut writer.conn, how).await.expect(how);
    let since = writer.open_since.take().unwrap_or_default();
    if how == "COMMIT" {
        counts.commits += 1;
        if others.iter().any(|o| *o < since) {
            counts.out_of_order += 1;
        }
    } else {
        counts.rollbacks += 1;
    }
}

async fn exec(conn: &mut AsyncPgConnection, sql: &str) -> QueryResult<usize> {
    diesel::sql_query(sql).execute(conn).await
}

/// Two templates, each with an old and an active version of three presets: plain, with a
/// schedule and a TTL, autoscaled.
async fn world(conn: &mut AsyncPgConnection) -> World {
    let person = seed::user(conn, "person").await;
    let mut world =
        World { templates: Vec::new(), presets: Vec::new(), person, workspaces: Vec::new() };
    for name in ["alpha", "beta"] {
        let (template_id, old) = seed::template(conn, name).await;
        let active = seed::version(conn, template_id, "v2").await;
        for version in [old, active] {
            for (i, preset) in ["plain", "scheduled", "scaled"].into_iter().enumerate() {
                let id = seed::preset(conn, version, preset, 2).await;
                match i {
                    1 => {
                        exec_bound(conn, "UPDATE presets SET expiration_ttl_secs = 3600, scheduling_timezone = 'UTC' WHERE id = $1", id).await.expect("ttl");
                        exec_bound(conn, "INSERT INTO preset_schedules (preset_id, position, cron, instances) VALUES ($1, 0, '0 9-17 * * 1-5', 4)", id).await.expect("schedule");
                    }
                    2 => {
                        exec_bound(conn, "UPDATE presets SET autoscale_min = 1, autoscale_max = 5, autoscale_window_secs = 1800, autoscale_headroom = 1.5 WHERE id = $1", id).await.expect("autoscale");
                    }
                    _ => {}
                }
                world.presets.push((template_id, version, id));
            }
        }
        world.templates.push((template_id, vec![old, active]));
    }
    world
}

async fn exec_bound(conn: &mut AsyncPgConnection, sql: &str, id: Uuid) -> QueryResult<usize> {
    diesel::sql_query(sql).bind::<SqlUuid, _>(id).execute(conn).await
}

const STATUSES: [&str; 6] = ["pending", "running", "succeeded", "failed", "canceling", "canceled"];
const AGENT_STATES: [&str; 3] = ["starting", "ready", "start_error"];

/// One write of a random kind, in the writer's open transaction.
async fn random_write(
    conn: &mut AsyncPgConnection,
    world: &mut World,
    rng: &mut Rng,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    let mut kind = rng.below(14);
    if kind == 12 && rng.below(4) > 0 {
        // A template change is rarer: it makes the next refresh a full one.
        kind = 4;
    }
    // Most writes act on a workspace; the pool starts empty.
    if world.workspaces.is_empty() || kind < 4 {
        let (template, version, preset) =
            world.presets[rng.below(world.presets.len() as u64) as usize];
        let created = now - Duration::seconds(rng.below(7200) as i64);
        let id = new_workspace(conn, template, PREBUILDS_USER_ID, created).await?;
        let status = rng.pick(&STATUSES);
        new_build(conn, id, version, Some(preset), "start", status, PREBUILDS_USER_ID, created)
            .await?;
        world.workspaces.push((id, template));
        return Ok(());
    }
    let (workspace, template) = world.workspaces[rng.below(world.workspaces.len() as u64) as usize];
    let (_, version, preset) = *world
        .presets
        .iter()
        .filter(|(t, _, _)| *t == template)
        .nth(rng.below(6) as usize)
        .unwrap_or(&world.presets[0]);
    match kind {
        4 | 5 => {
            // The latest build's job moves on.
            let status = rng.pick(&STATUSES);
            let finished = matches!(status, "succeeded" | "failed" | "canceled");
            diesel::sql_query(
                "UPDATE provisioner_jobs SET status = $2, started_at = COALESCE(started_at, $3),
                        completed_at = CASE WHEN $4 THEN $3 END,
                        failure_kind = CASE WHEN $2 = 'failed' AND $5 THEN 'lost_worker' END
                  WHERE id = (SELECT job_id FROM workspace_builds WHERE workspace_id = $1
                              ORDER BY build_number DESC LIMIT 1)",
            )
            .bind::<SqlUuid, _>(workspace)
            .bind::<Text, _>(status)
            .bind::<Timestamptz, _>(now)
            .bind::<diesel::sql_types::Bool, _>(finished)
            .bind::<diesel::sql_types::Bool, _>(rng.below(4) == 0)
            .execute(conn)
            .await?;
        }
        6 => {
            // A new build: a stop, a delete, or a start (maybe of another preset).
            let transition = rng.pick(&["start", "stop", "delete"]);
            let preset = (rng.below(3) > 0).then_some(preset);
            let initiator = if rng.below(4) == 0 { world.person } else { PREBUILDS_USER_ID };
            let status = rng.pick(&STATUSES);
            new_build(conn, workspace, version, preset, transition, status, initiator, now).await?;
        }
        7 => {
            // A claim: the person takes it over with a start build of its preset.
            diesel::sql_query("UPDATE workspaces SET owner_id = $2 WHERE id = $1")
                .bind::<SqlUuid, _>(workspace)
                .bind::<SqlUuid, _>(world.person)
                .execute(conn)
                .await?;
            new_build(
                conn,
                workspace,
                version,
                Some(preset),
                "start",
                "pending",
                world.person,
                now,
            )
            .await?;
        }
        8 => {
            diesel::sql_query(
                "UPDATE workspace_agents SET lifecycle_state = $2 WHERE build_id =
                   (SELECT id FROM workspace_builds WHERE workspace_id = $1
                    ORDER BY build_number DESC LIMIT 1)",
            )
            .bind::<SqlUuid, _>(workspace)
            .bind::<Text, _>(rng.pick(&AGENT_STATES))
            .execute(conn)
            .await?;
        }
        9 => {
            exec_bound(conn, "UPDATE workspaces SET deleted = true WHERE id = $1", workspace)
                .await?;
        }
        10 => {
            // A preset's settings change.
            let sql = rng.pick(&[
                "UPDATE presets SET desired_instances = (desired_instances % 4) + 1 WHERE id = $1",
                "UPDATE presets SET desired_instances = NULL WHERE id = $1",
                "UPDATE presets SET invalidated_at = now() WHERE id = $1",
                "UPDATE presets SET prebuild_status = 'hard_limited' WHERE id = $1",
                "UPDATE presets SET prebuild_status = 'healthy', desired_instances = 3 WHERE id = $1",
                "UPDATE presets SET expiration_ttl_secs = 1800 WHERE id = $1",
            ]);
            exec_bound(conn, sql, preset).await?;
        }
        11 => {
            let sql = rng.pick(&[
                "INSERT INTO preset_schedules (preset_id, position, cron, instances)
                 SELECT $1, COALESCE(max(position) + 1, 0), '*/30 * * * *', 1
                 FROM preset_schedules WHERE preset_id = $1",
                "DELETE FROM preset_schedules WHERE preset_id = $1",
            ]);
            exec_bound(conn, sql, preset).await?;
        }
        12 => {
            // The template's other version becomes active (or the template is deprecated).
            let versions =
                &world.templates.iter().find(|(t, _)| *t == template).expect("template").1;
            let other = rng.pick(versions);
            diesel::sql_query(
                "UPDATE templates SET active_version_id = $2,
                        deprecation_message = CASE WHEN $3 THEN 'old' END WHERE id = $1",
            )
            .bind::<SqlUuid, _>(template)
            .bind::<SqlUuid, _>(other)
            .bind::<diesel::sql_types::Bool, _>(rng.below(5) == 0)
            .execute(conn)
            .await?;
        }
        _ => {
            // Retention: an older build goes.
            exec_bound(
                conn,
                "DELETE FROM workspace_builds WHERE id = (
                   SELECT id FROM workspace_builds WHERE workspace_id = $1
                   ORDER BY build_number LIMIT 1)
                 AND EXISTS (SELECT 1 FROM workspace_builds WHERE workspace_id = $1 AND build_number > 1)",
                workspace,
            )
            .await?;
        }
    }
    Ok(())
}

async fn new_workspace(
    conn: &mut AsyncPgConnection,
    template: Uuid,
    owner: Uuid,
    at: DateTime<Utc>,
) -> QueryResult<Uuid> {
    let id = Uuid::new_v4();
    diesel::sql_query(
        "INSERT INTO workspaces (id, organization_id, owner_id, template_id, name, created_at, last_used_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<SqlUuid, _>(DEFAULT_ORGANIZATION_ID)
    .bind::<SqlUuid, _>(owner)
    .bind::<SqlUuid, _>(template)
    .bind::<Text, _>(format!("ws-{}", id.simple()))
    .bind::<Timestamptz, _>(at)
    .execute(conn)
    .await?;
    Ok(id)
}

/// The workspace's next build, with its job in `status` and one agent.
#[allow(clippy::too_many_arguments)]
async fn new_build(
    conn: &mut AsyncPgConnection,
    workspace: Uuid,
    version: Uuid,
    preset: Option<Uuid>,
    transition: &str,
    status: &str,
    initiator: Uuid,
    at: DateTime<Utc>,
) -> QueryResult<()> {
    let finished = matches!(status, "succeeded" | "failed" | "canceled");
    let job = Uuid::new_v4();
    diesel::sql_query(
        "INSERT INTO provisioner_jobs (id, organization_id, status, created_at, started_at,
                                       completed_at, for_prebuild, transition)
         VALUES ($1, $2, $3, $4, CASE WHEN $3 <> 'pending' THEN $4 END, CASE WHEN $5 THEN $4 END,
                 $6, $7)",
    )
    .bind::<SqlUuid, _>(job)
    .bind::<SqlUuid, _>(DEFAULT_ORGANIZATION_ID)
    .bind::<Text, _>(status)
    .bind::<Timestamptz, _>(at)
    .bind::<diesel::sql_types::Bool, _>(finished)
    .bind::<diesel::sql_types::Bool, _>(initiator == PREBUILDS_USER_ID)
    .bind::<Text, _>(transition)
    .execute(conn)
    .await?;
    let build = Uuid::new_v4();
    diesel::sql_query(
        "INSERT INTO workspace_builds (id, workspace_id, build_number, template_version_id,
                                       preset_id, transition, reason, initiator_id, job_id, created_at)
         SELECT $1, $2, COALESCE(max(build_number), 0) + 1, $3, $4, $5, 'prebuild', $6, $7, $8
         FROM workspace_builds WHERE workspace_id = $2",
    )
    .bind::<SqlUuid, _>(build)
    .bind::<SqlUuid, _>(workspace)
    .bind::<SqlUuid, _>(version)
    .bind::<Nullable<SqlUuid>, _>(preset)
    .bind::<Text, _>(transition)
    .bind::<SqlUuid, _>(initiator)
    .bind::<SqlUuid, _>(job)
    .bind::<Timestamptz, _>(at)
    .execute(conn)
    .await?;
    diesel::sql_query(
        "INSERT INTO workspace_agents (build_id, name, lifecycle_state) VALUES ($1, 'main', $2)",
    )
    .bind::<SqlUuid, _>(build)
    .bind::<Text, _>(if status == "succeeded" { "ready" } else { "starting" })
    .execute(conn)
    .await?;
    Ok(())
}

/// The change rows the feed has pruned stay pruned, and a prune under a lease another
/// replica took deletes nothing.
#[tokio::test]
async fn prune_deletes_read_changes_only_under_the_lease() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template, version) = seed::template(&mut conn, "pruned").await;
    let preset = seed::preset(&mut conn, version, "p", 1).await;
    let now = t("2025-06-02T09:00:00Z");
    let mut feed = PrebuildFeed::new(CONFIG);
    assert_eq!(feed.refresh(&mut conn, now, false).await.expect("first"), Refreshed::Full);
    seed::workspace(&mut conn, seed::WorkspaceSeed::prebuild(template, version, preset, now)).await;
    let Refreshed::Presets(changed) = feed.refresh(&mut conn, now, false).await.expect("second")
    else {
        panic!("an incremental refresh");
    };
    assert!(changed.contains(&preset), "the new prebuild's preset changed");
    let rows = || "SELECT count(*) AS n FROM prebuild_changes";
    let before = seed::count(&mut conn, rows()).await;
    assert!(before > 0);
    // The lease passes to another replica: this one's prune is refused.
    let stale = seed::lead(&db, "prebuilds").await;
    leases::release(&mut conn, &stale).await.expect("release");
    let fence = leases::acquire_or_renew(&mut conn, "prebuilds", "other", LEASE)
        .await
        .expect("lease query")
        .expect("the lease is free");
    let err = feed.prune(&mut conn, &stale).await.expect_err("fenced");
    assert_eq!(err.label(), "fenced");
    assert_eq!(seed::count(&mut conn, rows()).await, before, "a fenced prune deletes nothing");
    // Snapshots are cluster-wide: another test's open transaction holds the watermark back
    // until it ends, so refresh and prune until the watermark passes every row.
    let mut pruned = 0;
    for _ in 0..200 {
        pruned += feed.prune(&mut conn, &fence).await.expect("prune") as i64;
        if pruned == before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        feed.refresh(&mut conn, now, false).await.expect("refresh");
    }
    assert_eq!(pruned, before, "every row read is pruned");
    assert_eq!(seed::count(&mut conn, rows()).await, 0);
}

const LEASE: std::time::Duration = std::time::Duration::from_secs(600);

/// A person's workspace is never in the prebuild snapshot: its jobs moving on and its agents
/// reporting (the busiest writes of a fleet) record no change, while a prebuild's do.
#[tokio::test]
async fn only_a_prebuilds_jobs_and_agents_record_changes() {
    use seed::WorkspaceSeed;

    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template, version) = seed::template(&mut conn, "go").await;
    let alice = seed::user(&mut conn, "alice").await;
    let created = t("2025-06-02T08:00:00Z");
    let person = seed::workspace(
        &mut conn,
        WorkspaceSeed::owned(
            alice,
            template,
            version,
            poolkeeper::db::enums::Transition::Start,
            created,
        ),
    )
    .await;
    let preset = seed::preset(&mut conn, version, "small", 1).await;
    let prebuild =
        seed::workspace(&mut conn, WorkspaceSeed::prebuild(template, version, preset, created))
            .await;
    let changes = |ws: Uuid| {
        format!("SELECT count(*) AS n FROM prebuild_changes WHERE kind = 'workspace' AND target_id = '{ws}'")
    };
    let before = (
        seed::count(&mut conn, &changes(person)).await,
        seed::count(&mut conn, &changes(prebuild)).await,
    );
    for ws in [person, prebuild] {
        diesel::sql_query(format!(
            "UPDATE provisioner_jobs SET status = 'running', completed_at = NULL
               WHERE id IN (SELECT job_id FROM workspace_builds WHERE workspace_id = '{ws}')"
        ))
        .execute(&mut conn)
        .await
        .expect("job");
        diesel::sql_query(format!(
            "UPDATE workspace_agents SET lifecycle_state = 'starting'
               WHERE build_id IN (SELECT id FROM workspace_builds WHERE workspace_id = '{ws}')"
        ))
        .execute(&mut conn)
        .await
        .expect("agent");
    }
    let after = (
        seed::count(&mut conn, &changes(person)).await,
        seed::count(&mut conn, &changes(prebuild)).await,
    );
    assert_eq!(after.0 - before.0, 0, "a person's job and agent recorded changes");
    assert_eq!(after.1 - before.1, 2, "a prebuild's job and agent each record a change");
}
