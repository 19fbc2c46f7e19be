//! The change feed (rules §8 "Change feed"): the prebuild snapshot kept between cycles and
//! brought up to date from `prebuild_changes`, the rows triggers write in the same
//! transaction as every change the snapshot reads.
//!
//! Why it misses nothing: each change row carries its transaction's id. A read takes its
//! REPEATABLE READ snapshot S and reads every change row with an id at or above the
//! previous read's `xmin` (the oldest transaction still running when that read's snapshot
//! was taken), then remembers S's own `xmin`. A transaction that committed after the
//! previous snapshot was either running then (so its id is at or above that `xmin`) or had
//! not started (its id is higher still), so its rows are read by the first snapshot that
//! sees them, whatever order transactions commit in. Rows are read again until the
//! watermark passes them; those already applied are skipped. What a change names is then
//! reloaded in S, so the kept rows are exactly S's.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Nullable, Text, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use poolkeeper_core::prebuilds::ReconcilerConfig;
use uuid::Uuid;

use super::kept::KeptSnapshot;
use super::load::load_all;
use super::rows::{
    BuildRow, PresetRow, ScheduleRow, BUILDS_OF_SQL, PRESETS_BY_ID_SQL, SCHEDULES_SQL,
};
use crate::db::{DbPool, PREBUILDS_USER_ID};
use crate::store::leases::Fence;
use crate::store::StoreError;

/// The new watermark and every change row at or above the lower of it and the previous one.
/// The `LEFT JOIN` returns the watermark alone when there is no change. Binds: $1 the
/// previous watermark (the maximum for a full reload, which reads only rows at or above the
/// new watermark: those it must not apply again).
const CHANGES_SQL: &str = "
SELECT s.xmin, c.id, c.xid, c.kind, c.target_id
FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin) s
LEFT JOIN prebuild_changes c ON c.xid >= LEAST($1, s.xmin)";

/// Change rows deleted by one prune at most.
const PRUNE_BATCH: usize = 10_000;

/// Change rows no reader needs any more, a bounded batch at a time. Binds: $1 watermark.
const PRUNE_SQL: &str = "
DELETE FROM prebuild_changes WHERE (xid, id) IN (
    SELECT xid, id FROM prebuild_changes WHERE xid < $1 ORDER BY xid LIMIT 10000)";

#[derive(diesel::QueryableByName)]
struct ChangeRow {
    #[diesel(sql_type = BigInt)]
    xmin: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    id: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    xid: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    kind: Option<String>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    target_id: Option<Uuid>,
}

/// What a refresh changed, for the caller to replan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// Everything was reloaded: replan every preset.
    Full,
    /// Only these presets' inputs may have changed (empty: nothing did).
    Presets(HashSet<Uuid>),
}

/// The kept snapshot and where its feed stands.
#[derive(Debug)]
pub struct PrebuildFeed {
    config: ReconcilerConfig,
    kept: KeptSnapshot,
    /// Whether `kept` holds a snapshot (false before the first refresh and after a reset).
    valid: bool,
    /// Every transaction with a lower id had ended when the kept rows were read.
    watermark: i64,
    /// Changes at or above the watermark already applied, as (xid, id).
    applied: BTreeSet<(i64, i64)>,
    /// Rows below the watermark may be left to delete.
    prune_due: bool,
}

/// What one read found.
struct Read {
    kept: KeptSnapshot,
    refreshed: Refreshed,
    watermark: i64,
    applied: Vec<(i64, i64)>,
    /// Some row read is below the new watermark: it can be pruned.
    read_below_watermark: bool,
}

impl PrebuildFeed {
    pub fn new(config: ReconcilerConfig) -> Self {
        let kept = KeptSnapshot::new(config);
        Self {
            config,
            kept,
            valid: false,
            watermark: 0,
            applied: BTreeSet::new(),
            prune_due: false,
        }
    }

    /// The kept rows of the last successful refresh (none before it).
    pub fn kept(&self) -> &KeptSnapshot {
        &self.kept
    }

    /// Whether a change committed since the last refresh is waiting to be read (a claim, a
    /// job's end, an agent that became ready): one index read, cheap enough to ask every
    /// second between cycles. Rows at or above the watermark are only ever added, except by
    /// this feed's own pruning (below the watermark), so a count other than the applied
    /// ones means a refresh has something to read. `false`, with no statement, while nothing
    /// is kept (the next refresh reloads everything anyway).
    pub async fn has_unread(&self, pool: &DbPool) -> Result<bool, StoreError> {
        use crate::db::schema::prebuild_changes;
        use diesel::{ExpressionMethods, QueryDsl};
        if !self.valid {
            return Ok(false);
        }
        let mut conn = pool.get().await?;
        let at_or_above: i64 = prebuild_changes::table
            .filter(prebuild_changes::xid.ge(self.watermark))
            .count()
            .get_result(&mut conn)
            .await?;
        Ok(usize::try_from(at_or_above) != Ok(self.applied.len()))
    }

    /// Forgets the kept rows: the next refresh reloads everything.
    pub fn reset(&mut self) {
        self.kept = KeptSnapshot::new(self.config);
        self.valid = false;
        self.applied.clear();
    }

    /// Brings the kept rows to a new snapshot at `now`: everything when `full` (or nothing
    /// is kept yet), else what the changes since the last refresh name. A failed refresh
    /// forgets the kept rows, so the next one is full.
    pub async fn refresh(
        &mut self,
        conn: &mut AsyncPgConnection,
        now: DateTime<Utc>,
        full: bool,
    ) -> Result<Refreshed, StoreError> {
        let (config, watermark) = (self.config, self.watermark);
        // Taken out while the read runs: a read that fails leaves nothing half-updated kept.
        let kept = std::mem::replace(&mut self.kept, KeptSnapshot::new(config));
        let kept = (self.valid && !full).then_some(kept);
        self.valid = false;
        let applied = std::mem::take(&mut self.applied);
        let read = conn
            .build_transaction()
            .repeatable_read()
            .read_only()
            .run(async move |conn| read(conn, now, config, kept, watermark, applied).await)
            .await?;
        self.kept = read.kept;
        self.valid = true;
        self.watermark = read.watermark;
        self.applied = read.applied.into_iter().filter(|(xid, _)| *xid >= read.watermark).collect();
        // After a full reload, rows left below the watermark by an earlier leader may remain.
        self.prune_due |= read.read_below_watermark || read.refreshed == Refreshed::Full;
        Ok(read.refreshed)
    }

    /// Deletes a batch of change rows below the watermark, under the leader's `fence` (a
    /// replica that lost the lease must not delete rows the new leader has yet to read).
    /// Returns how many went; no statement at all when no row read since the last prune
    /// can be below the watermark.
    pub async fn prune(
        &mut self,
        conn: &mut AsyncPgConnection,
        fence: &Fence,
    ) -> Result<usize, StoreError> {
        if !self.valid || !self.prune_due {
            return Ok(0);
        }
        let watermark = self.watermark;
        let deleted = conn
            .transaction(async |conn| {
                fence.check(conn).await?;
                let deleted =
                    diesel::sql_query(PRUNE_SQL).bind::<BigInt, _>(watermark).execute(conn).await?;
                Ok::<_, StoreError>(deleted)
            })
            .await?;
        // A full batch may have left more.
        self.prune_due = deleted >= PRUNE_BATCH;
        Ok(deleted)
    }
}

async fn read(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    config: ReconcilerConfig,
    kept: Option<KeptSnapshot>,
    watermark: i64,
    applied: BTreeSet<(i64, i64)>,
) -> Result<Read, diesel::result::Error> {
    // The first statement takes the transaction's snapshot: the watermark and the rows
    // below are of the same one.
    let from = if kept.is_some() { watermark } else { i64::MAX };
    let changes: Vec<ChangeRow> =
        diesel::sql_query(CHANGES_SQL).bind::<BigInt, _>(from).load(conn).await?;
    let xmin = changes.as_slice().first().map_or(watermark, |c| c.xmin);
    let mut workspaces = HashSet::new();
    let mut presets = HashSet::new();
    let mut template_changed = false;
    let mut newly_applied = Vec::new();
    let read_below_watermark = changes.iter().any(|c| c.xid.is_some_and(|xid| xid < xmin));
    for change in changes {
        let (Some(id), Some(xid), Some(kind), Some(target)) =
            (change.id, change.xid, change.kind, change.target_id)
        else {
            continue;
        };
        if applied.contains(&(xid, id)) {
            continue;
        }
        newly_applied.push((xid, id));
        match kind.as_str() {
            "workspace" => {
                workspaces.insert(target);
            }
            "preset" => {
                presets.insert(target);
            }
            _ => template_changed = true,
        }
    }
    let mut all_applied: Vec<(i64, i64)> = applied.into_iter().collect();
    all_applied.extend(newly_applied);
    let kept = match kept {
        Some(kept) if !template_changed => kept,
        // Nothing kept, or a change every preset of a template reads: reload everything.
        // Every change read is in this snapshot, so in the reload: none is applied again
        // (a long transaction elsewhere can hold the watermark back for minutes, and a
        // template change read again would make every refresh a full one).
        _ => {
            let kept = load_all(conn, now, config).await?;
            return Ok(Read {
                kept,
                refreshed: Refreshed::Full,
                watermark: xmin,
                applied: all_applied,
                read_below_watermark,
            });
        }
    };
    let mut kept = kept;
    let touched = apply_changes(conn, now, &mut kept, workspaces, presets).await?;
    Ok(Read {
        kept,
        refreshed: Refreshed::Presets(touched),
        watermark: xmin,
        applied: all_applied,
        read_below_watermark,
    })
}

/// Reloads what the changes name into `kept`; returns the presets whose inputs may differ.
async fn apply_changes(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    kept: &mut KeptSnapshot,
    workspaces: HashSet<Uuid>,
    presets: HashSet<Uuid>,
) -> Result<HashSet<Uuid>, diesel::result::Error> {
    let mut touched = presets.clone();
    if !workspaces.is_empty() {
        let ids: Vec<Uuid> = workspaces.into_iter().collect();
        let builds: Vec<BuildRow> = diesel::sql_query(BUILDS_OF_SQL)
            .bind::<SqlUuid, _>(PREBUILDS_USER_ID)
            .bind::<Array<SqlUuid>, _>(&ids)
            .load(conn)
            .await?;
        touched.extend(kept.put_workspaces(&ids, builds));
    }
    if touched.is_empty() {
        return Ok(touched);
    }
    // Changed preset rows, and presets a prebuild names that were not kept (old versions).
    // A workspace's change leaves its presets' rows as they were (a template's reloads all).
    let mut reload: Vec<Uuid> = presets.into_iter().collect();
    reload.extend(kept.missing_presets());
    reload.sort_unstable();
    reload.dedup();
    if reload.is_empty() {
        kept.drop_unused_presets(&touched);
        return reload_claims(conn, now, kept, touched).await;
    }
    let rows: Vec<PresetRow> =
        diesel::sql_query(PRESETS_BY_ID_SQL).bind::<Array<SqlUuid>, _>(&reload).load(conn).await?;
    let schedules: Vec<ScheduleRow> =
        diesel::sql_query(SCHEDULES_SQL).bind::<Array<SqlUuid>, _>(&reload).load(conn).await?;
    let found: HashSet<Uuid> = rows.iter().map(|r| r.id).collect();
    for gone in reload.iter().filter(|id| !found.contains(id)) {
        kept.forget_preset(*gone);
    }
    kept.put_presets(rows, schedules);
    touched.extend(reload);
    kept.drop_unused_presets(&touched);
    reload_claims(conn, now, kept, touched).await
}

/// Reloads the claims of the autoscaled presets among `touched`; returns `touched`.
async fn reload_claims(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    kept: &mut KeptSnapshot,
    touched: HashSet<Uuid>,
) -> Result<HashSet<Uuid>, diesel::result::Error> {
    let (scaled, since) = kept.autoscaled(touched.iter().copied(), now);
    if !scaled.is_empty() {
        let claims = super::claims::load_claims(conn, scaled.clone(), since).await?;
        kept.put_claims(&scaled, claims);
    }
    Ok(touched)
}
