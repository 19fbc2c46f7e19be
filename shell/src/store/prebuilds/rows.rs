//! The rows the prebuild snapshot is read from, their statements, and their conversion to
//! the core's types. A row the core cannot read (an unknown enum, a negative count) makes
//! its preset unreadable for the cycle; it never fails the cycle.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use diesel::deserialize::FromSql;
use diesel::pg::{Pg, PgValue};
use diesel::sql_types::{BigInt, Bool, Double, Int4, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use poolkeeper_core::build::{JobStatus, Transition};
use poolkeeper_core::prebuilds::{
    Autoscale, FailedPrebuild, FinishedStatus, InFlightStatus, InProgressPrebuild, Preset,
    PresetSchedule, RecentBuild, RunningPrebuild,
};
use uuid::Uuid;

#[derive(diesel::QueryableByName)]
pub(super) struct PresetRow {
    #[diesel(sql_type = SqlUuid)]
    pub(super) id: Uuid,
    #[diesel(sql_type = Text)]
    pub(super) name: String,
    #[diesel(sql_type = SqlUuid)]
    pub(super) template_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub(super) template_version_id: Uuid,
    #[diesel(sql_type = Bool)]
    pub(super) using_active_version: bool,
    #[diesel(sql_type = Bool)]
    pub(super) template_deleted: bool,
    #[diesel(sql_type = Bool)]
    pub(super) template_deprecated: bool,
    #[diesel(sql_type = Int4)]
    pub(super) desired_instances: i32,
    #[diesel(sql_type = BigInt)]
    pub(super) expiration_ttl_secs: i64,
    #[diesel(sql_type = Text)]
    pub(super) scheduling_timezone: String,
    #[diesel(sql_type = BigInt)]
    pub(super) schedule_lead_secs: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub(super) invalidated_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Text)]
    pub(super) prebuild_status: String,
    #[diesel(sql_type = Text)]
    pub(super) organization_name: String,
    #[diesel(sql_type = Text)]
    pub(super) template_name: String,
    #[diesel(sql_type = Nullable<Int4>)]
    pub(super) autoscale_min: Option<i32>,
    #[diesel(sql_type = Nullable<Int4>)]
    pub(super) autoscale_max: Option<i32>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub(super) autoscale_window_secs: Option<i64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub(super) autoscale_headroom: Option<f64>,
    /// Of its template's active version, the template not deleted, with a base count: the
    /// preset is in the snapshot whether or not it owns prebuilds.
    #[diesel(sql_type = Bool)]
    pub(super) has_pool: bool,
}

#[derive(diesel::QueryableByName)]
pub(super) struct ScheduleRow {
    #[diesel(sql_type = SqlUuid)]
    pub(super) preset_id: Uuid,
    #[diesel(sql_type = Text)]
    pub(super) cron: String,
    #[diesel(sql_type = Int4)]
    pub(super) instances: i32,
}

/// A build of a live prebuild; see [`BUILDS_SQL`].
#[derive(diesel::QueryableByName)]
pub(super) struct BuildRow {
    #[diesel(sql_type = SqlUuid)]
    pub(super) workspace_id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    pub(super) workspace_created_at: DateTime<Utc>,
    #[diesel(sql_type = Int4)]
    pub(super) build_number: i32,
    #[diesel(sql_type = SqlUuid)]
    pub(super) template_version_id: Uuid,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub(super) preset_id: Option<Uuid>,
    #[diesel(sql_type = Text)]
    pub(super) transition: Known<Transition>,
    #[diesel(sql_type = Timestamptz)]
    pub(super) created_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub(super) job_status: Known<JobStatus>,
    /// False for a job the reaper failed (lost worker, queue wait) or that could not run:
    /// not a failed build in rules §4's sense. NULL kinds (older rows) count as builds.
    #[diesel(sql_type = Bool)]
    pub(super) counts_as_build: bool,
    #[diesel(sql_type = Bool)]
    pub(super) ready: bool,
    /// The workspace is a live prebuild (owned by the prebuilds user, not deleted). The
    /// full load reads only those; a reload of changed workspaces reads any, for the
    /// presets their builds name.
    #[diesel(sql_type = Bool)]
    pub(super) live: bool,
}

/// A text column parsed as it is read, so that a row costs no allocation for it: `None` is
/// a value the core does not know, which makes the row's preset unreadable (never the load).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Known<T>(pub(super) Option<T>);

impl<T: FromStr> FromSql<Text, Pg> for Known<T> {
    fn from_sql(value: PgValue<'_>) -> diesel::deserialize::Result<Self> {
        Ok(Self(std::str::from_utf8(value.as_bytes())?.parse().ok()))
    }
}

/// A preset's columns and the joins they need; the statements below add their filter.
macro_rules! preset_select {
    () => {
        "
SELECT p.id, p.name, v.template_id, p.template_version_id,
       COALESCE(t.active_version_id = v.id AND NOT t.deleted
                AND p.desired_instances IS NOT NULL, false) AS has_pool,
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
JOIN organizations o ON o.id = t.organization_id"
    };
}

/// A build's columns, its job's status, and whether all its agents are ready (no agents
/// counts as ready). Builds with a non-ready agent are few, so they are looked up as a set
/// rather than aggregating every agent.
macro_rules! build_select {
    ($live:literal) => {
        concat!(
            "
SELECT b.workspace_id, w.created_at AS workspace_created_at, b.build_number,
       b.template_version_id, b.preset_id, b.transition, b.created_at,
       j.status AS job_status,
       (j.status <> 'failed' OR COALESCE(j.failure_kind, 'build') = 'build') AS counts_as_build,
       nr.build_id IS NULL AS ready, ",
            $live,
            " AS live
FROM workspaces w
JOIN workspace_builds b ON b.workspace_id = w.id
JOIN provisioner_jobs j ON j.id = b.job_id
LEFT JOIN ",
            unready_builds!(),
            " nr ON nr.build_id = b.id"
        )
    };
}

/// Presets of active versions with a pool, plus any preset (of any version, of a deleted
/// template) that still owns a live prebuild: the core must see those to delete them.
/// Binds: $1 the prebuilds user.
pub(super) const PRESETS_SQL: &str = concat!(
    preset_select!(),
    "
WHERE (t.active_version_id = v.id AND NOT t.deleted AND p.desired_instances IS NOT NULL)
   OR EXISTS (SELECT 1 FROM workspace_builds b JOIN workspaces w ON w.id = b.workspace_id
              WHERE b.preset_id = p.id AND w.owner_id = $1 AND NOT w.deleted)"
);

/// The named presets, whether or not they belong in the snapshot. Binds: $1 preset ids.
pub(super) const PRESETS_BY_ID_SQL: &str = concat!(preset_select!(), "\nWHERE p.id = ANY($1)");

/// Binds: $1 preset ids.
pub(super) const SCHEDULES_SQL: &str = "
SELECT preset_id, cron, instances FROM preset_schedules
WHERE preset_id = ANY($1) ORDER BY preset_id, position";

/// Every build of every live prebuild. The latest build of each prebuild, the newest one
/// naming a preset and the latest finished start build are picked in Rust: a prebuild has
/// a handful of builds, and three hash joins without a sort cost a quarter of the
/// `DISTINCT ON` and window queries this replaced at 90,000 prebuilds (`cargo bench -p
/// poolkeeper --bench pg`). Binds: $1 the prebuilds user.
pub(super) const BUILDS_SQL: &str =
    concat!(build_select!("true"), "\nWHERE w.owner_id = $1 AND NOT w.deleted");

/// Every build of the named workspaces, live prebuilds or not (the change feed's reload).
/// Binds: $1 the prebuilds user, $2 workspace ids.
pub(super) const BUILDS_OF_SQL: &str =
    concat!(build_select!("(w.owner_id = $1 AND NOT w.deleted)"), "\nWHERE w.id = ANY($2)");

/// The build as a recent build when it is a finished start build of a preset. A job failed
/// by the reaper or unable to run is no build at all for the backoff and the hard limit
/// (rules §4 counts failed builds; queue time and lost workers are not the template's).
pub(super) fn finished_start(build: &BuildRow) -> Option<RecentBuild> {
    if build.transition.0 != Some(Transition::Start) || !build.counts_as_build {
        return None;
    }
    Some(RecentBuild {
        workspace_id: build.workspace_id,
        preset_id: build.preset_id?,
        created_at: build.created_at,
        job_status: finished(build.job_status.0?)?,
    })
}

pub(super) fn to_preset(
    row: PresetRow,
    schedules: Vec<PresetSchedule>,
) -> Result<Preset, &'static str> {
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

#[derive(Debug, Clone)]
pub(super) enum Row {
    Running(RunningPrebuild),
    InProgress(InProgressPrebuild),
    Failed(FailedPrebuild),
}

/// Classifies a live prebuild by its latest build: a succeeded start is running, an
/// unfinished job is in progress, a failed start is failed (rules §4 "Failed prebuilds",
/// whatever failed it), anything else (stopped, canceled) is none of them.
pub(super) fn to_prebuild(row: &BuildRow, preset_id: Uuid) -> Result<Option<Row>, &'static str> {
    let transition = row.transition.0.ok_or("unknown transition")?;
    let status = row.job_status.0.ok_or("unknown job status")?;
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

fn finished(status: JobStatus) -> Option<FinishedStatus> {
    match status {
        JobStatus::Succeeded => Some(FinishedStatus::Succeeded),
        JobStatus::Failed => Some(FinishedStatus::Failed),
        JobStatus::Canceled => Some(FinishedStatus::Canceled),
        _ => None,
    }
}
