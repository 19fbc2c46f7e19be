//! Loading the prebuild snapshot: one REPEATABLE READ, READ ONLY transaction of three
//! queries whatever the number of presets (presets, schedules, and every build of the
//! prebuild workspaces, from which each prebuild's latest build and latest finished start
//! build are picked here). A row the core cannot read (an unknown enum, a negative count)
//! drops its preset from this cycle with a warning; it never fails the cycle.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use diesel::sql_types::{
    Array, BigInt, Bool, Double, Int4, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use poolkeeper_core::build::{JobStatus, Transition};
use poolkeeper_core::prebuilds::{
    Autoscale, FailedPrebuild, FinishedStatus, InFlightStatus, InProgressPrebuild,
    PrebuildSnapshot, Preset, PresetSchedule, RecentBuild, ReconcilerConfig, RunningPrebuild,
};
use uuid::Uuid;

use crate::db::PREBUILDS_USER_ID;
use crate::store::StoreError;

/// Names of a preset's organization, template and itself, for logs and metric labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresetNames {
    pub organization: String,
    pub template: String,
    pub preset: String,
}

/// A loaded snapshot with what the loop needs besides it.
#[derive(Debug, Clone)]
pub struct LoadedPrebuilds {
    pub snapshot: PrebuildSnapshot,
    pub names: HashMap<Uuid, PresetNames>,
}

#[derive(diesel::QueryableByName)]
struct PresetRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = SqlUuid)]
    template_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    template_version_id: Uuid,
    #[diesel(sql_type = Bool)]
    using_active_version: bool,
    #[diesel(sql_type = Bool)]
    template_deleted: bool,
    #[diesel(sql_type = Bool)]
    template_deprecated: bool,
    #[diesel(sql_type = Int4)]
    desired_instances: i32,
    #[diesel(sql_type = BigInt)]
    expiration_ttl_secs: i64,
    #[diesel(sql_type = Text)]
    scheduling_timezone: String,
    #[diesel(sql_type = BigInt)]
    schedule_lead_secs: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    invalidated_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Text)]
    prebuild_status: String,
    #[diesel(sql_type = Text)]
    organization_name: String,
    #[diesel(sql_type = Text)]
    template_name: String,
    #[diesel(sql_type = Nullable<Int4>)]
    autoscale_min: Option<i32>,
    #[diesel(sql_type = Nullable<Int4>)]
    autoscale_max: Option<i32>,
    #[diesel(sql_type = Nullable<BigInt>)]
    autoscale_window_secs: Option<i64>,
    #[diesel(sql_type = Nullable<Double>)]
    autoscale_headroom: Option<f64>,
}

#[derive(diesel::QueryableByName)]
struct ScheduleRow {
    #[diesel(sql_type = SqlUuid)]
    preset_id: Uuid,
    #[diesel(sql_type = Text)]
    cron: String,
    #[diesel(sql_type = Int4)]
    instances: i32,
}

/// A build of a live prebuild; see [`BUILDS_SQL`].
#[derive(diesel::QueryableByName)]
struct BuildRow {
    #[diesel(sql_type = SqlUuid)]
    workspace_id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    workspace_created_at: DateTime<Utc>,
    #[diesel(sql_type = Int4)]
    build_number: i32,
    #[diesel(sql_type = SqlUuid)]
    template_version_id: Uuid,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    preset_id: Option<Uuid>,
    #[diesel(sql_type = Text)]
    transition: String,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    job_status: String,
    /// False for a job the reaper failed (lost worker, queue wait) or that could not run:
    /// not a failed build in rules §4's sense. NULL kinds (older rows) count as builds.
    #[diesel(sql_type = Bool)]
    counts_as_build: bool,
    #[diesel(sql_type = Bool)]
    ready: bool,
}

/// Presets of active versions with a pool, plus any preset (of any version, of a deleted
/// template) that still owns a live prebuild: the core must see those to delete them.
const PRESETS_SQL: &str = "
SELECT p.id, p.name, v.template_id, p.template_version_id,
       COALESCE(t.active_version_id = v.id, false) AS using_active_version,
       t.deleted AS template_deleted,
       COALESCE(t.deprecation_message, '') <> '' AS template_deprecated,
       COALESCE(p.desired_instances, 0) AS desired_instances,
       p.expiration_ttl_secs, p.scheduling_timezone, p.schedule_lead_secs, p.invalidated_at,
       p.prebuild_status, o.name AS organization_name, t.name AS template_name,
       p.autoscale_min, p.autoscale_max, p.autoscale_window_secs, p.autoscale_headroom
FROM presets p
JOIN template_versions v ON v.id = p.template_version_id
JOIN templates t ON t.id = v.template_id
JOIN organizations o ON o.id = t.organization_id
WHERE (t.active_version_id = v.id AND NOT t.deleted AND p.desired_instances IS NOT NULL)
   OR EXISTS (SELECT 1 FROM workspace_builds b JOIN workspaces w ON w.id = b.workspace_id
              WHERE b.preset_id = p.id AND w.owner_id = $1 AND NOT w.deleted)
ORDER BY o.name, t.name, p.name, p.id";

const SCHEDULES_SQL: &str = "
SELECT preset_id, cron, instances FROM preset_schedules
WHERE preset_id = ANY($1) ORDER BY preset_id, position";

/// Every build of every live prebuild with its job's status, and whether all its agents
/// are ready (no agents counts as ready). The latest build of each prebuild, the newest one
/// naming a preset and the latest finished start build are picked in [`assemble`]: a
/// prebuild has a handful of builds, and three hash joins without a sort cost a quarter of
/// the `DISTINCT ON` and window queries this replaced at 90,000 prebuilds (`cargo bench -p
/// poolkeeper --bench pg`). Builds with a non-ready agent are few, so they are looked up
/// as a set rather than aggregating every agent.
const BUILDS_SQL: &str = concat!(
    "
SELECT b.workspace_id, w.created_at AS workspace_created_at, b.build_number,
       b.template_version_id, b.preset_id, b.transition, b.created_at,
       j.status AS job_status,
       (j.status <> 'failed' OR COALESCE(j.failure_kind, 'build') = 'build') AS counts_as_build,
       nr.build_id IS NULL AS ready
FROM workspaces w
JOIN workspace_builds b ON b.workspace_id = w.id
JOIN provisioner_jobs j ON j.id = b.job_id
LEFT JOIN ",
    unready_builds!(),
    " nr
       ON nr.build_id = b.id
WHERE w.owner_id = $1 AND NOT w.deleted"
);

/// Loads the prebuild snapshot at `now`.
pub async fn load_prebuild_snapshot(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    config: ReconcilerConfig,
) -> Result<LoadedPrebuilds, StoreError> {
    // An absurd lookback (from configuration) means "all of history", never a panic.
    let lookback_start = i64::try_from(config.backoff_lookback_secs)
        .ok()
        .and_then(chrono::Duration::try_seconds)
        .and_then(|lookback| now.checked_sub_signed(lookback))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let (presets, schedules, builds, claims) = conn
        .build_transaction()
        .repeatable_read()
        .read_only()
        .run(async move |conn| {
            let presets: Vec<PresetRow> = diesel::sql_query(PRESETS_SQL)
                .bind::<SqlUuid, _>(PREBUILDS_USER_ID)
                .load(conn)
                .await?;
            let ids: Vec<Uuid> = presets.iter().map(|p| p.id).collect();
            let schedules: Vec<ScheduleRow> =
                diesel::sql_query(SCHEDULES_SQL).bind::<Array<SqlUuid>, _>(ids).load(conn).await?;
            let builds: Vec<BuildRow> = diesel::sql_query(BUILDS_SQL)
                .bind::<SqlUuid, _>(PREBUILDS_USER_ID)
                .load(conn)
                .await?;
            let (scaled, since) = autoscaled(&presets, now);
            let claims = super::claims::load_claims(conn, scaled, since).await?;
            Ok::<_, diesel::result::Error>((presets, schedules, builds, claims))
        })
        .await?;
    let mut loaded = assemble(config, lookback_start, presets, schedules, builds);
    let kept: HashSet<Uuid> = loaded.snapshot.presets.iter().map(|p| p.id).collect();
    loaded.snapshot.claims = claims.into_iter().filter(|c| kept.contains(&c.preset_id)).collect();
    Ok(loaded)
}

/// The autoscaled presets and the oldest claim instant any of them reads: two windows back
/// (the demand's window and the hysteresis behind it), `MIN_UTC` for an absurd window.
fn autoscaled(presets: &[PresetRow], now: DateTime<Utc>) -> (Vec<Uuid>, DateTime<Utc>) {
    let scaled: Vec<&PresetRow> =
        presets.iter().filter(|p| p.autoscale_window_secs.is_some()).collect();
    let widest = scaled.iter().filter_map(|p| p.autoscale_window_secs).max().unwrap_or(0);
    let since = widest
        .checked_mul(2)
        .and_then(chrono::Duration::try_seconds)
        .and_then(|back| now.checked_sub_signed(back))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    (scaled.iter().map(|p| p.id).collect(), since)
}

fn assemble(
    config: ReconcilerConfig,
    lookback_start: DateTime<Utc>,
    preset_rows: Vec<PresetRow>,
    schedule_rows: Vec<ScheduleRow>,
    mut build_rows: Vec<BuildRow>,
) -> LoadedPrebuilds {
    let mut bad: HashSet<Uuid> = HashSet::new();
    let mut schedules: HashMap<Uuid, Vec<PresetSchedule>> = HashMap::new();
    for row in schedule_rows {
        match u32::try_from(row.instances) {
            Ok(instances) => schedules
                .entry(row.preset_id)
                .or_default()
                .push(PresetSchedule { cron: row.cron, instances }),
            Err(_) => skip(&mut bad, row.preset_id, "negative schedule instances"),
        }
    }
    let mut presets = Vec::with_capacity(preset_rows.len());
    let mut names = HashMap::with_capacity(preset_rows.len());
    for row in preset_rows {
        let id = row.id;
        names.insert(
            id,
            PresetNames {
                organization: row.organization_name.clone(),
                template: row.template_name.clone(),
                preset: row.name.clone(),
            },
        );
        match to_preset(row, schedules.remove(&id).unwrap_or_default()) {
            Ok(preset) => presets.push(preset),
            Err(why) => skip(&mut bad, id, why),
        }
    }
    // Each prebuild's builds, newest first; prebuilds in id order (that of the snapshot).
    build_rows.sort_unstable_by(|a, b| {
        a.workspace_id.cmp(&b.workspace_id).then(b.build_number.cmp(&a.build_number))
    });
    let mut running = Vec::new();
    let mut in_progress = Vec::new();
    let mut recent_builds = Vec::new();
    let mut failed = Vec::new();
    for builds in build_rows.chunk_by(|a, b| a.workspace_id == b.workspace_id) {
        let latest = &builds[0];
        // A delete build may carry no preset: the prebuild's is that of its newest build
        // that has one.
        if let Some(preset_id) = builds.iter().find_map(|b| b.preset_id) {
            match to_prebuild(latest, preset_id) {
                Ok(Some(Row::Running(r))) => running.push(r),
                Ok(Some(Row::InProgress(r))) => in_progress.push(r),
                Ok(Some(Row::Failed(r))) => failed.push(r),
                Ok(None) => {}
                Err(why) => skip(&mut bad, preset_id, why),
            }
        }
        if let Some(recent) = builds.iter().find_map(finished_start) {
            recent_builds.push(recent);
        }
    }
    keep_recent(&mut recent_builds, lookback_start, config.failure_hard_limit);
    presets.retain(|p| !bad.contains(&p.id));
    running.retain(|r| !bad.contains(&r.preset_id));
    in_progress.retain(|r| !bad.contains(&r.preset_id));
    recent_builds.retain(|r| !bad.contains(&r.preset_id));
    failed.retain(|r| !bad.contains(&r.preset_id));
    names.retain(|id, _| !bad.contains(id));
    LoadedPrebuilds {
        snapshot: PrebuildSnapshot {
            config,
            presets,
            running,
            in_progress,
            recent_builds,
            failed,
            claims: Vec::new(),
        },
        names,
    }
}

/// The build as a recent build when it is a finished start build of a preset. A job failed
/// by the reaper or unable to run is no build at all for the backoff and the hard limit
/// (rules §4 counts failed builds; queue time and lost workers are not the template's).
fn finished_start(build: &BuildRow) -> Option<RecentBuild> {
    if build.transition != "start" || !build.counts_as_build {
        return None;
    }
    Some(RecentBuild {
        workspace_id: build.workspace_id,
        preset_id: build.preset_id?,
        created_at: build.created_at,
        job_status: finished(&build.job_status)?,
    })
}

/// Keeps the builds inside the lookback window, or among the `hard_limit` newest of their
/// preset (the hard limit may look further back), ordered by preset, newest first.
fn keep_recent(builds: &mut Vec<RecentBuild>, lookback_start: DateTime<Utc>, hard_limit: u32) {
    builds.sort_unstable_by(|a, b| {
        (a.preset_id, b.created_at, a.workspace_id).cmp(&(
            b.preset_id,
            a.created_at,
            b.workspace_id,
        ))
    });
    let mut preset = None;
    let mut rank = 0u64;
    builds.retain(|b| {
        if preset != Some(b.preset_id) {
            preset = Some(b.preset_id);
            rank = 0;
        }
        rank += 1;
        b.created_at >= lookback_start || rank <= u64::from(hard_limit)
    });
}

fn skip(bad: &mut HashSet<Uuid>, preset_id: Uuid, why: &str) {
    if bad.insert(preset_id) {
        tracing::warn!(%preset_id, why, "preset skipped this cycle: unreadable row");
    }
}

fn to_preset(row: PresetRow, schedules: Vec<PresetSchedule>) -> Result<Preset, &'static str> {
    let autoscale = to_autoscale(&row)?;
    super::super::convert::core_preset(super::super::convert::StoredPreset {
        id: row.id,
        name: row.name,
        template_id: row.template_id,
        template_version_id: row.template_version_id,
        using_active_version: row.using_active_version,
        template_deleted: row.template_deleted,
        template_deprecated: row.template_deprecated,
        desired_instances: Some(row.desired_instances),
        expiration_ttl_secs: row.expiration_ttl_secs,
        scheduling_timezone: row.scheduling_timezone,
        schedule_lead_secs: row.schedule_lead_secs,
        invalidated_at: row.invalidated_at,
        status: row.prebuild_status.parse().map_err(|_| "unknown prebuild_status")?,
        schedules,
        autoscale,
    })
}

/// The autoscale columns: all set (and valid) or none.
fn to_autoscale(row: &PresetRow) -> Result<Option<Autoscale>, &'static str> {
    let (min, max, window_secs, headroom) = match (
        row.autoscale_min,
        row.autoscale_max,
        row.autoscale_window_secs,
        row.autoscale_headroom,
    ) {
        (None, None, None, None) => return Ok(None),
        (Some(min), Some(max), Some(window), Some(headroom)) => (min, max, window, headroom),
        _ => return Err("incomplete autoscale"),
    };
    let autoscale = Autoscale {
        min: u32::try_from(min).map_err(|_| "negative autoscale_min")?,
        max: u32::try_from(max).map_err(|_| "negative autoscale_max")?,
        window_secs: u64::try_from(window_secs).map_err(|_| "negative autoscale_window_secs")?,
        headroom,
    };
    autoscale.check().map_err(|_| "invalid autoscale")?;
    Ok(Some(autoscale))
}

enum Row {
    Running(RunningPrebuild),
    InProgress(InProgressPrebuild),
    Failed(FailedPrebuild),
}

/// Classifies a live prebuild by its latest build: a succeeded start is running, an
/// unfinished job is in progress, a failed start is failed (rules §4 "Failed prebuilds",
/// whatever failed it), anything else (stopped, canceled) is none of them.
fn to_prebuild(row: &BuildRow, preset_id: Uuid) -> Result<Option<Row>, &'static str> {
    let transition: Transition = row.transition.parse().map_err(|_| "unknown transition")?;
    let status: JobStatus = row.job_status.parse().map_err(|_| "unknown job status")?;
    let in_flight = match status {
        JobStatus::Succeeded if transition == Transition::Start => {
            return Ok(Some(Row::Running(RunningPrebuild {
                workspace_id: row.workspace_id,
                preset_id,
                template_version_id: row.template_version_id,
                created_at: row.workspace_created_at,
                ready: row.ready,
            })));
        }
        JobStatus::Failed if transition == Transition::Start => {
            return Ok(Some(Row::Failed(FailedPrebuild {
                workspace_id: row.workspace_id,
                preset_id,
                created_at: row.created_at,
            })));
        }
        JobStatus::Pending => InFlightStatus::Pending,
        JobStatus::Running => InFlightStatus::Running,
        JobStatus::Canceling => InFlightStatus::Canceling,
        _ => return Ok(None),
    };
    Ok(Some(Row::InProgress(InProgressPrebuild {
        workspace_id: row.workspace_id,
        preset_id,
        template_version_id: row.template_version_id,
        transition,
        job_status: in_flight,
        build_number: u32::try_from(row.build_number).map_err(|_| "negative build_number")?,
    })))
}

fn finished(status: &str) -> Option<FinishedStatus> {
    match status.parse::<JobStatus>().ok()? {
        JobStatus::Succeeded => Some(FinishedStatus::Succeeded),
        JobStatus::Failed => Some(FinishedStatus::Failed),
        JobStatus::Canceled => Some(FinishedStatus::Canceled),
        _ => None,
    }
}
