//! Loading the prebuild snapshot: one REPEATABLE READ, READ ONLY transaction of four
//! queries whatever the number of presets (presets, schedules, prebuild workspaces with
//! their latest build, recent finished start builds). A row the core cannot read (an
//! unknown enum, a negative count) drops its preset from this cycle with a warning; it
//! never fails the cycle.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Bool, Int4, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use poolkeeper_core::build::{JobStatus, Transition};
use poolkeeper_core::prebuilds::{
    FinishedStatus, InFlightStatus, InProgressPrebuild, PrebuildSnapshot, Preset, PresetSchedule,
    PresetStatus, RecentBuild, ReconcilerConfig, RunningPrebuild,
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

#[derive(diesel::QueryableByName)]
struct PrebuildRow {
    #[diesel(sql_type = SqlUuid)]
    workspace_id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
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
struct RecentRow {
    #[diesel(sql_type = SqlUuid)]
    workspace_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    preset_id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    job_status: String,
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
       p.prebuild_status, o.name AS organization_name, t.name AS template_name
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

/// Every live prebuild with its latest build; `preset_id` is that of its newest build that
/// had one (a delete build may carry none). Set-based on purpose: a per-workspace LATERAL
/// probe of the latest build cost ~2.5× as much at 90,000 prebuilds (`cargo bench -p
/// poolkeeper --bench pg`), and this way the planner can still choose index probes when the
/// pool is small. The newest build with a preset is looked up only when the latest has none.
const PREBUILDS_SQL: &str = "
WITH lb AS (
  SELECT DISTINCT ON (b.workspace_id) b.workspace_id, w.created_at, b.id,
         b.template_version_id, b.transition, b.build_number, b.job_id, b.preset_id
  FROM workspaces w JOIN workspace_builds b ON b.workspace_id = w.id
  WHERE w.owner_id = $1 AND NOT w.deleted
  ORDER BY b.workspace_id, b.build_number DESC
), ag AS (
  SELECT a.build_id, bool_and(a.lifecycle_state = 'ready') AS ready
  FROM workspace_agents a JOIN lb ON lb.id = a.build_id
  GROUP BY a.build_id
)
SELECT lb.workspace_id, lb.created_at,
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

/// The latest finished start build of each live prebuild, kept when inside the lookback
/// window or among the `$3` newest of its preset (the hard limit may look further back).
const RECENT_SQL: &str = "
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
    let (presets, schedules, prebuilds, recent) = conn
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
            let prebuilds: Vec<PrebuildRow> = diesel::sql_query(PREBUILDS_SQL)
                .bind::<SqlUuid, _>(PREBUILDS_USER_ID)
                .load(conn)
                .await?;
            let recent: Vec<RecentRow> = diesel::sql_query(RECENT_SQL)
                .bind::<SqlUuid, _>(PREBUILDS_USER_ID)
                .bind::<Timestamptz, _>(lookback_start)
                .bind::<BigInt, _>(i64::from(config.failure_hard_limit))
                .load(conn)
                .await?;
            Ok::<_, diesel::result::Error>((presets, schedules, prebuilds, recent))
        })
        .await?;
    Ok(assemble(config, presets, schedules, prebuilds, recent))
}

fn assemble(
    config: ReconcilerConfig,
    preset_rows: Vec<PresetRow>,
    schedule_rows: Vec<ScheduleRow>,
    prebuild_rows: Vec<PrebuildRow>,
    recent_rows: Vec<RecentRow>,
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
    let mut running = Vec::new();
    let mut in_progress = Vec::new();
    for row in prebuild_rows {
        let Some(preset_id) = row.preset_id else { continue };
        match to_prebuild(&row, preset_id) {
            Ok(Some(Row::Running(r))) => running.push(r),
            Ok(Some(Row::InProgress(r))) => in_progress.push(r),
            Ok(None) => {}
            Err(why) => skip(&mut bad, preset_id, why),
        }
    }
    let mut recent_builds = Vec::with_capacity(recent_rows.len());
    for row in recent_rows {
        match finished(&row.job_status) {
            Some(job_status) => recent_builds.push(RecentBuild {
                workspace_id: row.workspace_id,
                preset_id: row.preset_id,
                created_at: row.created_at,
                job_status,
            }),
            None => skip(&mut bad, row.preset_id, "unknown job status"),
        }
    }
    presets.retain(|p| !bad.contains(&p.id));
    running.retain(|r| !bad.contains(&r.preset_id));
    in_progress.retain(|r| !bad.contains(&r.preset_id));
    recent_builds.retain(|r| !bad.contains(&r.preset_id));
    names.retain(|id, _| !bad.contains(id));
    LoadedPrebuilds {
        snapshot: PrebuildSnapshot { config, presets, running, in_progress, recent_builds },
        names,
    }
}

fn skip(bad: &mut HashSet<Uuid>, preset_id: Uuid, why: &str) {
    if bad.insert(preset_id) {
        tracing::warn!(%preset_id, why, "preset skipped this cycle: unreadable row");
    }
}

fn to_preset(row: PresetRow, schedules: Vec<PresetSchedule>) -> Result<Preset, &'static str> {
    Ok(Preset {
        id: row.id,
        name: row.name,
        template_id: row.template_id,
        template_version_id: row.template_version_id,
        using_active_version: row.using_active_version,
        template_deleted: row.template_deleted,
        template_deprecated: row.template_deprecated,
        desired_instances: u32::try_from(row.desired_instances)
            .map_err(|_| "negative desired_instances")?,
        expiration_ttl_secs: u64::try_from(row.expiration_ttl_secs)
            .map_err(|_| "negative expiration_ttl_secs")?,
        scheduling_timezone: row.scheduling_timezone,
        schedules,
        schedule_lead_secs: u64::try_from(row.schedule_lead_secs)
            .map_err(|_| "negative schedule_lead_secs")?,
        invalidated_at: row.invalidated_at,
        status: row
            .prebuild_status
            .parse::<PresetStatus>()
            .map_err(|_| "unknown prebuild_status")?,
    })
}

enum Row {
    Running(RunningPrebuild),
    InProgress(InProgressPrebuild),
}

/// Classifies a live prebuild by its latest build: a succeeded start is running, an
/// unfinished job is in progress, anything else (stopped, failed) is neither.
fn to_prebuild(row: &PrebuildRow, preset_id: Uuid) -> Result<Option<Row>, &'static str> {
    let transition: Transition = row.transition.parse().map_err(|_| "unknown transition")?;
    let status: JobStatus = row.job_status.parse().map_err(|_| "unknown job status")?;
    let in_flight = match status {
        JobStatus::Succeeded if transition == Transition::Start => {
            return Ok(Some(Row::Running(RunningPrebuild {
                workspace_id: row.workspace_id,
                preset_id,
                template_version_id: row.template_version_id,
                created_at: row.created_at,
                ready: row.ready,
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
