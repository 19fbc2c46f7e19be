//! The prebuild snapshot loader against a reference: a pool of prebuilds with many builds
//! each, in every state, loaded by `load_prebuild_snapshot` and by the straightforward
//! queries it replaced (latest build by `DISTINCT ON`, recent builds by a window), which
//! must agree row for row and in order.

use poolkeeper_tests::rng;
use poolkeeper_tests::seed;

use chrono::{DateTime, Duration, Utc};
use diesel::sql_types::{BigInt, Bool, Int4, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use poolkeeper::db::enums::{JobStatus, Transition};
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::db::PREBUILDS_USER_ID;
use poolkeeper::store::prebuilds::load_prebuild_snapshot;
use poolkeeper_core::build;
use poolkeeper_core::prebuilds::{
    FailedPrebuild, FinishedStatus, InFlightStatus, InProgressPrebuild, PrebuildSnapshot,
    RecentBuild, ReconcilerConfig, RunningPrebuild,
};
use rng::Rng;
use seed::{t, WorkspaceSeed};
use uuid::Uuid;

fn now() -> DateTime<Utc> {
    t("2025-06-02T09:00:00Z")
}

/// The reference for live prebuilds: each with its latest build.
const REFERENCE_PREBUILDS_SQL: &str = "
WITH lb AS (
  SELECT DISTINCT ON (b.workspace_id) b.workspace_id, w.created_at, b.id,
         b.created_at AS build_created_at, b.template_version_id, b.transition, b.build_number, b.job_id, b.preset_id
  FROM workspaces w JOIN workspace_builds b ON b.workspace_id = w.id
  WHERE w.owner_id = $1 AND NOT w.deleted
  ORDER BY b.workspace_id, b.build_number DESC
), ag AS (
  SELECT a.build_id, bool_and(a.lifecycle_state = 'ready') AS ready
  FROM workspace_agents a JOIN lb ON lb.id = a.build_id
  GROUP BY a.build_id
)
SELECT lb.workspace_id, lb.created_at, lb.build_created_at,
       COALESCE(lb.preset_id,
                (SELECT b2.preset_id FROM workspace_builds b2
                  WHERE b2.workspace_id = lb.workspace_id AND b2.preset_id IS NOT NULL
                  ORDER BY b2.build_number DESC LIMIT 1)) AS preset_id,
       lb.template_version_id, lb.transition, lb.build_number, j.status AS job_status,
       COALESCE(ag.ready, true) AS ready
FROM lb
JOIN provisioner_jobs j ON j.id = lb.job_id
LEFT JOIN ag ON ag.build_id = lb.id
ORDER BY lb.workspace_id";

/// The reference for recent builds: the latest finished start build of each live prebuild,
/// inside the lookback window or among the `$3` newest of its preset.
const REFERENCE_RECENT_SQL: &str = "
SELECT workspace_id, preset_id, created_at, job_status FROM (
  SELECT latest.*, row_number() OVER (PARTITION BY preset_id
                                      ORDER BY created_at DESC, workspace_id) AS rank
  FROM (
    SELECT DISTINCT ON (b.workspace_id) b.workspace_id, b.preset_id, b.created_at,
           j.status AS job_status
    FROM workspace_builds b
    JOIN workspaces w ON w.id = b.workspace_id
    JOIN provisioner_jobs j ON j.id = b.job_id
    WHERE w.owner_id = $1 AND NOT w.deleted AND b.transition = 'start'
      AND b.preset_id IS NOT NULL AND j.status IN ('succeeded', 'failed', 'canceled')
    ORDER BY b.workspace_id, b.build_number DESC
  ) latest
) ranked
WHERE created_at >= $2 OR rank <= $3
ORDER BY preset_id, created_at DESC, workspace_id";

#[derive(diesel::QueryableByName)]
struct ReferencePrebuild {
    #[diesel(sql_type = SqlUuid)]
    workspace_id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    build_created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    preset_id: Option<Uuid>,
    #[diesel(sql_type = SqlUuid)]
    template_version_id: Uuid,
    #[diesel(sql_type = Text)]
    transition: String,
    #[diesel(sql_type = Int4)]
    build_number: i32,
    #[diesel(sql_type = Text)]
    job_status: String,
    #[diesel(sql_type = Bool)]
    ready: bool,
}

#[derive(diesel::QueryableByName)]
struct ReferenceRecent {
    #[diesel(sql_type = SqlUuid)]
    workspace_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    preset_id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    job_status: String,
}

/// (running, in progress, recent builds, failed) as the reference queries see them.
async fn reference(
    conn: &mut AsyncPgConnection,
    config: ReconcilerConfig,
) -> (Vec<RunningPrebuild>, Vec<InProgressPrebuild>, Vec<RecentBuild>, Vec<FailedPrebuild>) {
    let lookback_start = now() - Duration::seconds(config.backoff_lookback_secs as i64);
    let prebuilds: Vec<ReferencePrebuild> = diesel::sql_query(REFERENCE_PREBUILDS_SQL)
        .bind::<SqlUuid, _>(PREBUILDS_USER_ID)
        .load(conn)
        .await
        .expect("reference prebuilds");
    let recent: Vec<ReferenceRecent> = diesel::sql_query(REFERENCE_RECENT_SQL)
        .bind::<SqlUuid, _>(PREBUILDS_USER_ID)
        .bind::<Timestamptz, _>(lookback_start)
        .bind::<BigInt, _>(i64::from(config.failure_hard_limit))
        .load(conn)
        .await
        .expect("reference recent builds");
    let mut running = Vec::new();
    let mut in_progress = Vec::new();
    let mut failed = Vec::new();
    for row in prebuilds {
        let Some(preset_id) = row.preset_id else { continue };
        let transition: build::Transition = row.transition.parse().expect("transition");
        let status: build::JobStatus = row.job_status.parse().expect("job status");
        let job_status = match status {
            build::JobStatus::Succeeded if transition == build::Transition::Start => {
                running.push(RunningPrebuild {
                    workspace_id: row.workspace_id,
                    preset_id,
                    template_version_id: row.template_version_id,
                    created_at: row.created_at,
                    ready: row.ready,
                });
                continue;
            }
            // A failed start, whatever failed it: rules §4 "Failed prebuilds".
            build::JobStatus::Failed if transition == build::Transition::Start => {
                failed.push(FailedPrebuild {
                    workspace_id: row.workspace_id,
                    preset_id,
                    created_at: row.build_created_at,
                });
                continue;
            }
            build::JobStatus::Pending => InFlightStatus::Pending,
            build::JobStatus::Running => InFlightStatus::Running,
            build::JobStatus::Canceling => InFlightStatus::Canceling,
            _ => continue,
        };
        in_progress.push(InProgressPrebuild {
            workspace_id: row.workspace_id,
            preset_id,
            template_version_id: row.template_version_id,
            transition,
            job_status,
            build_number: u32::try_from(row.build_number).expect("build number"),
        });
    }
    let recent = recent
        .into_iter()
        .map(|row| RecentBuild {
            workspace_id: row.workspace_id,
            preset_id: row.preset_id,
            created_at: row.created_at,
            job_status: match row.job_status.as_str() {
                "succeeded" => FinishedStatus::Succeeded,
                "failed" => FinishedStatus::Failed,
                "canceled" => FinishedStatus::Canceled,
                other => panic!("unfinished status {other}"),
            },
        })
        .collect();
    (running, in_progress, recent, failed)
}

const TRANSITIONS: [Transition; 3] = [Transition::Start, Transition::Stop, Transition::Delete];

#[tokio::test]
async fn the_snapshot_matches_the_reference_queries() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template_id, old_version) = seed::template(&mut conn, "go").await;
    // Of a version no longer active: in the snapshot only while it owns a live prebuild.
    let old = seed::preset(&mut conn, old_version, "old", 1).await;
    let version = seed::version(&mut conn, template_id, "v2").await;
    let small = seed::preset(&mut conn, version, "small", 2).await;
    let large = seed::preset(&mut conn, version, "large", 5).await;
    let person = seed::user(&mut conn, "alice").await;

    // Few distinct instants, some outside the hour of lookback, so that ranks tie on time.
    let instants: Vec<DateTime<Utc>> =
        [10, 30, 50, 70, 90, 120, 180, 240].iter().map(|m| now() - Duration::minutes(*m)).collect();
    let presets = [Some(small), Some(small), Some(large), Some(large), Some(old), None];
    let mut dice = Rng::new(0x9e37_79b9_7f4a_7c15);
    for _ in 0..160 {
        let created_at = dice.pick(&instants);
        let mut build_seed = WorkspaceSeed {
            preset_id: dice.pick(&presets),
            transition: dice.pick(&TRANSITIONS),
            status: dice.pick(JobStatus::ALL),
            ready: dice.below(4) > 0,
            ..WorkspaceSeed::prebuild(template_id, version, small, created_at)
        };
        if dice.below(10) == 0 {
            build_seed.owner_id = person;
        }
        let ws = seed::workspace(&mut conn, build_seed).await;
        for number in 2..=(1 + dice.below(4) as i32) {
            let later = WorkspaceSeed {
                preset_id: dice.pick(&presets),
                transition: dice.pick(&TRANSITIONS),
                status: dice.pick(JobStatus::ALL),
                ready: dice.below(4) > 0,
                created_at: dice.pick(&instants),
                ..WorkspaceSeed::prebuild(template_id, old_version, small, created_at)
            };
            seed::build(&mut conn, ws, number, &later).await;
        }
        match dice.below(12) {
            0 => execute(&mut conn, "UPDATE workspaces SET deleted = true WHERE id = $1", ws).await,
            // A build without agents counts as ready; one agent not ready makes it not ready.
            1 => {
                execute(
                    &mut conn,
                    "DELETE FROM workspace_agents WHERE build_id IN
                       (SELECT id FROM workspace_builds WHERE workspace_id = $1)",
                    ws,
                )
                .await
            }
            2 => {
                execute(
                    &mut conn,
                    "INSERT INTO workspace_agents (build_id, name, lifecycle_state)
                     SELECT id, 'second', 'starting' FROM workspace_builds WHERE workspace_id = $1",
                    ws,
                )
                .await
            }
            _ => {}
        }
    }

    // The last lookback is absurd: all of history, as the loader promises (the replaced
    // query failed instead, binding an instant PostgreSQL cannot store).
    for (lookback, hard_limit) in [(3600, 3), (3600, 0), (0, 1), (0, 0), (86_400, 2), (u64::MAX, 3)]
    {
        let config = ReconcilerConfig {
            backoff_interval_secs: 60,
            backoff_lookback_secs: lookback,
            failure_hard_limit: hard_limit,
            max_pending_creates_per_preset: 0,
            failed_keep: 3,
            failed_grace_secs: 3600,
        };
        let loaded = load_prebuild_snapshot(&mut conn, now(), config).await.expect("load");
        let PrebuildSnapshot { presets, running, in_progress, recent_builds, failed, .. } =
            loaded.snapshot;
        let ids: Vec<Uuid> = presets.iter().map(|p| p.id).collect();
        assert!(ids.contains(&old), "a preset owning a live prebuild is loaded");
        let lookback = lookback.min(10 * 365 * 86_400);
        let (want_running, want_in_progress, want_recent, want_failed) =
            reference(&mut conn, ReconcilerConfig { backoff_lookback_secs: lookback, ..config })
                .await;
        assert!(!want_running.is_empty() && !want_in_progress.is_empty());
        assert!(!want_failed.is_empty());
        assert_eq!(failed, want_failed, "failed ({lookback} s, limit {hard_limit})");
        assert_eq!(running, want_running, "running ({lookback} s, limit {hard_limit})");
        assert_eq!(in_progress, want_in_progress, "in progress ({lookback} s, limit {hard_limit})");
        assert_eq!(recent_builds, want_recent, "recent ({lookback} s, limit {hard_limit})");
    }
}

async fn execute(conn: &mut AsyncPgConnection, sql: &str, id: Uuid) {
    diesel::sql_query(sql).bind::<SqlUuid, _>(id).execute(conn).await.expect(sql);
}
