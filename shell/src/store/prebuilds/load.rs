//! Loading the prebuild snapshot whole: one REPEATABLE READ, READ ONLY transaction of a few
//! queries whatever the number of presets (presets, schedules, every build of the prebuild
//! workspaces, claims of autoscaled presets). The rows are kept ([`KeptSnapshot`]) and the
//! snapshot assembled from them, the way the change feed's updates are (see `feed`), so a
//! full load and an updated one cannot differ in how rows become the core's types.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use poolkeeper_core::prebuilds::{PrebuildSnapshot, ReconcilerConfig};
use uuid::Uuid;

use super::kept::KeptSnapshot;
use super::rows::{BuildRow, PresetRow, ScheduleRow, BUILDS_SQL, PRESETS_SQL, SCHEDULES_SQL};
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

/// Loads the prebuild snapshot at `now`.
pub async fn load_prebuild_snapshot(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    config: ReconcilerConfig,
) -> Result<LoadedPrebuilds, StoreError> {
    let kept = conn
        .build_transaction()
        .repeatable_read()
        .read_only()
        .run(async move |conn| load_all(conn, now, config).await)
        .await?;
    Ok(kept.assemble(None, now))
}

/// The hash tables of the builds' statement (90,000 prebuilds need about 13 MB) kept in
/// memory: at the default 4 MB they spill to temporary files. For this transaction only.
const LOAD_WORK_MEM_SQL: &str = "SET LOCAL work_mem = '32MB'";

/// Every row of the snapshot, read in the caller's transaction (whose snapshot they are).
/// The builds' statement is pipelined behind the presets': the server runs it while the
/// presets are decoded and their schedules asked for (that statement then queues behind it).
pub(super) async fn load_all(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    config: ReconcilerConfig,
) -> Result<KeptSnapshot, diesel::result::Error> {
    conn.batch_execute(LOAD_WORK_MEM_SQL).await?;
    let mut shared: &AsyncPgConnection = conn;
    let builds = diesel::sql_query(BUILDS_SQL)
        .bind::<SqlUuid, _>(PREBUILDS_USER_ID)
        .load::<BuildRow>(&mut shared);
    let presets = async {
        let mut shared: &AsyncPgConnection = shared;
        let presets: Vec<PresetRow> = diesel::sql_query(PRESETS_SQL)
            .bind::<SqlUuid, _>(PREBUILDS_USER_ID)
            .load(&mut shared)
            .await?;
        let ids: Vec<Uuid> = presets.iter().map(|p| p.id).collect();
        let schedules: Vec<ScheduleRow> = diesel::sql_query(SCHEDULES_SQL)
            .bind::<Array<SqlUuid>, _>(ids)
            .load(&mut shared)
            .await?;
        Ok((presets, schedules))
    };
    let ((presets, schedules), builds) = futures_util::try_join!(presets, builds)?;
    let mut kept = KeptSnapshot::new(config);
    kept.put_presets(presets, schedules);
    kept.put_live(builds);
    let (scaled, since) = kept.autoscaled(kept.preset_ids(), now);
    let claims = super::claims::load_claims(conn, scaled.clone(), since).await?;
    kept.put_claims(&scaled, claims);
    Ok(kept)
}
