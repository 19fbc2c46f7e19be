//! Claims that arrive together are handed over together (rules §3 "Claim"). Concurrent
//! requests queue; a batch task takes every request waiting (up to `MAX_BATCH`) and, in one
//! transaction, reads the requests and their presets' candidates in one round trip, locks the
//! first claimable prebuilds of each preset with one statement and hands them all over with
//! another. On a busy server a claim costs statements, plans and round trips more than rows:
//! a batch of many claims pays for a handful of statements between them, where one claim on
//! its own pays for six.
//!
//! The batch is a faster way to the same result, never a different one: a request it cannot
//! hand a prebuild (the request does not check out, its preset's page ran short, its name
//! repeats another in the batch, or the transaction failed before its commit) takes the
//! one-by-one path, which reports the request's errors and builds fresh when no prebuild is
//! left.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use diesel::sql_types::{
    Array, BigInt, Binary, Bool, Int4, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use poolkeeper_core::prebuilds::{self as core_prebuilds, choose_claim, RunningPrebuild};
use uuid::Uuid;

use super::{
    begin_on_generic_plans, claim_or_create, core_preset, end_transaction, read_request,
    requested_next_start, requested_ttl, roll_back, usable_version, CandidateRow, ClaimError,
    ClaimOutcome, ClaimRequest, HandOver, LockedPrebuild,
};
use crate::db::enums::{BuildReason, Transition};
use crate::db::models::Workspace;
use crate::db::{DbPool, PREBUILDS_USER_ID};
use crate::store::batcher::{BatchWork, Batcher};
use crate::store::rows::Prepared;

/// Most requests one batch takes: enough for every claimer of a busy API at once, few
/// enough that the statements' arrays stay small.
const MAX_BATCH: usize = 64;
/// Batches in flight at once, each on its own connection: while one waits for the server,
/// the next is being read.
const BATCHES_AT_ONCE: usize = 2;
/// Most candidates a batch reads for one preset: twice its own claims and four more, past
/// every claim the other batches are making of it.
const MOST_CANDIDATES_PER_PRESET: usize = 2 * MAX_BATCH + 4 + (BATCHES_AT_ONCE - 1) * MAX_BATCH;

/// Where the API's claims go: batched with the others that arrive at the same time.
#[derive(Clone)]
pub struct ClaimBatcher {
    batcher: Batcher<ClaimWork>,
}

impl std::fmt::Debug for ClaimBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimBatcher")
            .field("batches", &self.batches())
            .field("handed_in_batches", &self.handed_in_batches())
            .finish()
    }
}

struct ClaimWork {
    pool: DbPool,
    /// Claims of each preset that running batches are making: the prebuilds they lock are
    /// still listed for a batch that reads its candidates meanwhile.
    claiming: Mutex<HashMap<Uuid, usize>>,
    handed: AtomicU64,
}

struct Waiting {
    request: ClaimRequest,
    now: DateTime<Utc>,
}

/// What a batch tells a request.
enum Reply {
    Handed(Box<ClaimOutcome>),
    /// Not handed a prebuild by the batch, and nothing written for it: take the one-by-one path.
    NotHanded,
    /// The batch's commit failed: the hand-over may or may not have been made.
    CommitFailed(String),
}

impl ClaimBatcher {
    pub fn new(pool: DbPool) -> Self {
        let work =
            ClaimWork { pool, claiming: Mutex::new(HashMap::new()), handed: AtomicU64::new(0) };
        Self { batcher: Batcher::new(work, MAX_BATCH, BATCHES_AT_ONCE) }
    }

    /// `claim_or_create`, with a prebuild claim first tried in a batch.
    pub async fn claim_or_create(
        &self,
        now: DateTime<Utc>,
        request: &ClaimRequest,
    ) -> Result<ClaimOutcome, ClaimError> {
        if request.preset_id.is_some() {
            let waiting = Waiting { request: request.clone(), now };
            // A batch task that died gave no reply: the one-by-one path is still there.
            match self.batcher.submit(waiting).await.unwrap_or(Reply::NotHanded) {
                Reply::Handed(outcome) => return Ok(*outcome),
                Reply::CommitFailed(why) => return Err(ClaimError::CommitFailed(why)),
                Reply::NotHanded => {}
            }
        }
        claim_or_create(&self.batcher.work().pool, now, request).await
    }

    /// Claims handed over by batches so far.
    pub fn handed_in_batches(&self) -> u64 {
        AtomicU64::load(&self.batcher.work().handed, Ordering::Relaxed)
    }

    /// Batches run so far (each of one or more requests).
    pub fn batches(&self) -> u64 {
        self.batcher.batches()
    }
}

impl BatchWork for ClaimWork {
    type Request = Waiting;
    type Reply = Reply;

    async fn serve(&self, batch: Vec<Waiting>) -> Vec<Reply> {
        let claiming = Claiming::start(self, &batch);
        run_batch(self, &batch, &claiming.others).await
    }
}

impl ClaimWork {
    fn claiming(&self) -> MutexGuard<'_, HashMap<Uuid, usize>> {
        // Consistent after every statement under the lock: a panic elsewhere cannot leave
        // it half-changed.
        self.claiming.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A batch's claims, counted in `ClaimWork::claiming` while it serves them (until it answers
/// or ends early).
struct Claiming<'a> {
    work: &'a ClaimWork,
    mine: HashMap<Uuid, usize>,
    /// What the batches already running were claiming of the same presets when this one
    /// started.
    others: HashMap<Uuid, usize>,
}

impl<'a> Claiming<'a> {
    fn start(work: &'a ClaimWork, batch: &[Waiting]) -> Self {
        let mut mine: HashMap<Uuid, usize> = HashMap::new();
        for preset_id in batch.iter().filter_map(|w| w.request.preset_id) {
            *mine.entry(preset_id).or_default() += 1;
        }
        let mut others = HashMap::new();
        let mut claiming = work.claiming();
        for (preset_id, n) in &mine {
            let count = claiming.entry(*preset_id).or_default();
            if *count > 0 {
                others.insert(*preset_id, *count);
            }
            *count += n;
        }
        drop(claiming);
        Self { work, mine, others }
    }
}

impl Drop for Claiming<'_> {
    fn drop(&mut self) {
        let mut claiming = self.work.claiming();
        for (preset_id, n) in &self.mine {
            if let Some(count) = claiming.get_mut(preset_id) {
                *count = count.saturating_sub(*n);
                if *count == 0 {
                    claiming.remove(preset_id);
                }
            }
        }
    }
}

/// Serves one batch: a reply for each request, in order.
async fn run_batch(
    work: &ClaimWork,
    batch: &[Waiting],
    others: &HashMap<Uuid, usize>,
) -> Vec<Reply> {
    let now = batch.iter().map(|w| w.now).max().unwrap_or_else(Utc::now);
    let requests: Vec<&ClaimRequest> = batch.iter().map(|w| &w.request).collect();
    let mut replies: BTreeMap<usize, Reply> = match hand_over_batch(
        &work.pool, &requests, others, now,
    )
    .await
    {
        Ok(handed) => {
            work.handed.fetch_add(handed.len() as u64, Ordering::Relaxed);
            handed
                .into_iter()
                .map(|(index, outcome)| (index, Reply::Handed(outcome.into())))
                .collect()
        }
        Err(Failed::AtCommit { error, claims }) => {
            tracing::error!(%error, claims = claims.len(), "a claim batch's commit failed");
            let why = error.to_string();
            claims.into_iter().map(|index| (index, Reply::CommitFailed(why.clone()))).collect()
        }
        Err(Failed::BeforeCommit(error)) => {
            tracing::warn!(%error, claims = batch.len(), "a claim batch failed; its requests take the one-by-one path");
            BTreeMap::new()
        }
    };
    (0..batch.len()).map(|index| replies.remove(&index).unwrap_or(Reply::NotHanded)).collect()
}

/// How a batch failed: before its commit nothing was written; at its commit the claims it
/// was making (by request index) may or may not have been made.
enum Failed {
    BeforeCommit(ClaimError),
    AtCommit { error: ClaimError, claims: Vec<usize> },
}

/// A request that checked out, with what its hand-over writes.
struct Eligible<'a> {
    index: usize,
    request: &'a ClaimRequest,
    ttl_secs: i64,
    next_start_at: Option<DateTime<Utc>>,
}

/// The requests of one preset and the candidates the core chose for them, in its order.
struct PresetGroup<'a> {
    preset: core_prebuilds::Preset,
    requests: Vec<Eligible<'a>>,
    candidates: Vec<Uuid>,
}

/// Hands over what it can, in one transaction; the outcomes by request index.
async fn hand_over_batch(
    pool: &DbPool,
    requests: &[&ClaimRequest],
    others: &HashMap<Uuid, usize>,
    now: DateTime<Utc>,
) -> Result<BTreeMap<usize, ClaimOutcome>, Failed> {
    let mut conn = pool.get().await.map_err(|err| Failed::BeforeCommit(err.into()))?;
    begin_on_generic_plans(&mut conn).await.map_err(Failed::BeforeCommit)?;
    let handed = match read_lock_and_hand_over(&mut conn, requests, others, now).await {
        Ok(handed) => handed,
        Err(err) => return Err(Failed::BeforeCommit(roll_back(&mut conn, err).await)),
    };
    let claims: Vec<usize> = handed.keys().copied().collect();
    end_transaction(&mut conn, Ok(handed)).await.map_err(|error| Failed::AtCommit { error, claims })
}

async fn read_lock_and_hand_over(
    conn: &mut AsyncPgConnection,
    requests: &[&ClaimRequest],
    others: &HashMap<Uuid, usize>,
    now: DateTime<Utc>,
) -> Result<BTreeMap<usize, ClaimOutcome>, ClaimError> {
    let mut groups = read_batch(conn, requests, others, now).await?;
    groups.retain(|_, group| !group.candidates.is_empty());
    if groups.is_empty() {
        return Ok(BTreeMap::new());
    }
    let groups: Vec<PresetGroup<'_>> = groups.into_values().collect();
    lock_and_hand_over(conn, &groups, now).await
}

/// The requests' checks and their presets' first pages, in one round trip; the requests
/// that checked out, grouped by preset with the core's choice of candidates.
async fn read_batch<'a>(
    conn: &AsyncPgConnection,
    requests: &[&'a ClaimRequest],
    others: &HashMap<Uuid, usize>,
    now: DateTime<Utc>,
) -> Result<BTreeMap<Uuid, PresetGroup<'a>>, ClaimError> {
    let mut asked: BTreeMap<Uuid, usize> = BTreeMap::new();
    for preset_id in requests.iter().filter_map(|r| r.preset_id) {
        *asked.entry(preset_id).or_default() += 1;
    }
    // Twice the claims and four more: a batch whose first choices the one-by-one path or
    // another server holds still finds enough behind them. Past every claim this server's
    // other batches are making: what those lock is listed until they commit.
    let wanted: BTreeMap<Uuid, usize> = asked
        .into_iter()
        .map(|(preset_id, n)| {
            let past = others.get(&preset_id).copied().unwrap_or(0);
            (preset_id, (2 * n + 4 + past).min(MOST_CANDIDATES_PER_PRESET))
        })
        .collect();
    let reads = futures_util::future::join_all(requests.iter().map(|request| async move {
        let mut conn = conn;
        read_request(&mut conn, request).await
    }));
    let pages = async {
        let mut conn = conn;
        candidate_pages(&mut conn, &wanted).await
    };
    let (reads, pages) = futures_util::future::join(reads, pages).await;
    let mut pages: BTreeMap<Uuid, Vec<CandidateRow>> =
        pages?.into_iter().fold(BTreeMap::new(), |mut by_preset, row| {
            by_preset.entry(row.page_preset).or_insert_with(Vec::new).push(row.row);
            by_preset
        });
    let mut names = HashSet::new();
    let mut groups: BTreeMap<Uuid, PresetGroup<'a>> = BTreeMap::new();
    for (index, (request, read)) in requests.iter().zip(reads).enumerate() {
        let Some((template, Some(preset), false)) = read? else { continue };
        let name = (request.user_id, request.name.to_lowercase());
        if usable_version(&template).is_err() || !names.insert(name) {
            continue;
        }
        let group = match groups.entry(preset.id) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                let Ok(core) = core_preset(&template, &preset) else { continue };
                let page = pages.remove(&preset.id).unwrap_or_default();
                let running: Vec<RunningPrebuild> =
                    page.into_iter().filter_map(|row| row.running(preset.id)).collect();
                let candidates = choose_claim(&running, &core, now).candidates;
                entry.insert(PresetGroup { preset: core, requests: Vec::new(), candidates })
            }
        };
        group.requests.push(Eligible {
            index,
            request,
            ttl_secs: requested_ttl(&template, request.ttl_secs),
            next_start_at: requested_next_start(&template, request, now),
        });
    }
    Ok(groups)
}

#[derive(QueryableByName)]
struct PageRow {
    #[diesel(sql_type = SqlUuid)]
    page_preset: Uuid,
    #[diesel(embed)]
    row: CandidateRow,
}

/// The first `wanted` candidates of each preset, in one statement: a page sized to the
/// batch, not the page of 32 that one claim alone reads, for each of a batch's many presets.
async fn candidate_pages(
    conn: &mut &AsyncPgConnection,
    wanted: &BTreeMap<Uuid, usize>,
) -> Result<Vec<PageRow>, diesel::result::Error> {
    let preset_ids: Vec<Uuid> = wanted.keys().copied().collect();
    let wanted: Vec<i32> = wanted.values().map(|n| array_index(*n)).collect();
    Prepared::new(
        diesel::sql_query(PAGES_SQL)
            .bind::<SqlUuid, _>(PREBUILDS_USER_ID)
            .bind::<Array<SqlUuid>, _>(preset_ids)
            .bind::<Array<Int4>, _>(wanted),
    )
    .load(conn)
    .await
}

const PAGES_SQL: &str = concat!(
    "SELECT g.preset_id AS page_preset, c.*
     FROM unnest($2::uuid[], $3::int4[]) AS g(preset_id, wanted)
     CROSS JOIN LATERAL (",
    candidate_page_sql!("g.preset_id", "", "g.wanted"),
    ") c"
);

#[derive(QueryableByName)]
struct LockedRow {
    /// The group (1-based, in the order given) the prebuild was locked for.
    #[diesel(sql_type = BigInt)]
    batch_group: i64,
    #[diesel(embed)]
    prebuild: LockedPrebuild,
}

/// Locks, for each group, as many of its candidates as it has requests: the first in the
/// core's order not locked by another claim and still an unclaimed running prebuild of the
/// preset. One statement for every preset of the batch.
const LOCK_BATCH_SQL: &str = concat!(
    "SELECT g.n AS batch_group, l.*
     FROM unnest($1::uuid[], $2::int4[], $3::int4[], $4::int4[])
          WITH ORDINALITY AS g(preset_id, first, last, need, n)
     CROSS JOIN LATERAL (",
    lock_candidates_sql!("($5::uuid[])[g.first:g.last]", "$6", "g.preset_id", "g.need"),
    ") l
     ORDER BY g.n, l.rank"
);

/// Locks what it can and hands it over; the outcomes by request index.
async fn lock_and_hand_over(
    conn: &mut AsyncPgConnection,
    groups: &[PresetGroup<'_>],
    now: DateTime<Utc>,
) -> Result<BTreeMap<usize, ClaimOutcome>, ClaimError> {
    let (mut presets, mut firsts, mut lasts, mut needs, mut candidates) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for group in groups {
        let first = candidates.len() + 1;
        candidates.extend_from_slice(&group.candidates);
        presets.push(group.preset.id);
        firsts.push(array_index(first));
        lasts.push(array_index(candidates.len()));
        needs.push(array_index(group.requests.len()));
    }
    let locked: Vec<LockedRow> = Prepared::new(
        diesel::sql_query(LOCK_BATCH_SQL)
            .bind::<Array<SqlUuid>, _>(&presets)
            .bind::<Array<Int4>, _>(&firsts)
            .bind::<Array<Int4>, _>(&lasts)
            .bind::<Array<Int4>, _>(&needs)
            .bind::<Array<SqlUuid>, _>(&candidates)
            .bind::<SqlUuid, _>(PREBUILDS_USER_ID),
    )
    .load(conn)
    .await?;
    // Pair each group's requests, in arrival order, with its locked prebuilds that the core
    // still hands out (judged as they are under the lock), in the core's order.
    let mut by_group: Vec<Vec<LockedPrebuild>> = groups.iter().map(|_| Vec::new()).collect();
    for row in locked {
        let group = usize::try_from(row.batch_group - 1).ok().and_then(|g| by_group.get_mut(g));
        if let Some(group) = group {
            group.push(row.prebuild);
        }
    }
    let mut hand_overs: Vec<(usize, HandOver)> = Vec::new();
    for (group, locked) in groups.iter().zip(by_group) {
        let claimable = locked.into_iter().filter(|p| p.still_claimable(&group.preset, now));
        for (eligible, prebuild) in group.requests.iter().zip(claimable) {
            let hand_over = HandOver::new(
                prebuild,
                group.preset.id,
                eligible.request,
                eligible.ttl_secs,
                eligible.next_start_at,
            );
            hand_overs.push((eligible.index, hand_over));
        }
    }
    if hand_overs.is_empty() {
        return Ok(BTreeMap::new());
    }
    let handed = hand_over_all(conn, &hand_overs, now).await?;
    let mut by_workspace: BTreeMap<Uuid, (usize, HandOver)> =
        hand_overs.into_iter().map(|(index, h)| (h.prebuild.id, (index, h))).collect();
    let mut outcomes = BTreeMap::new();
    for workspace in handed {
        let Some((index, hand_over)) = by_workspace.remove(&workspace.id) else { continue };
        outcomes.insert(index, hand_over.outcome(workspace));
    }
    Ok(outcomes)
}

/// A 1-based position or a count, as the statement's `int4` arrays take it (a batch is far
/// smaller than `i32::MAX`).
fn array_index(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Every hand-over of the batch in one statement: the one-by-one hand-over's, over arrays.
/// Binds are named in the file.
const HAND_OVER_BATCH_SQL: &str = include_str!("../sql/claim_hand_over_batch.sql");

async fn hand_over_all(
    conn: &mut AsyncPgConnection,
    hand_overs: &[(usize, HandOver)],
    now: DateTime<Utc>,
) -> Result<Vec<Workspace>, diesel::result::Error> {
    let ids = |id: fn(&HandOver) -> Uuid| -> Vec<Uuid> {
        hand_overs.iter().map(|(_, h)| id(h)).collect()
    };
    let workspace_ids: Vec<Uuid> = ids(|h| h.prebuild.id);
    let build_numbers: Vec<i32> = hand_overs.iter().map(|(_, h)| h.prebuild.build_number).collect();
    let user_ids: Vec<Uuid> = ids(|h| h.user_id);
    let names: Vec<&str> = hand_overs.iter().map(|(_, h)| h.name.as_str()).collect();
    let schedules: Vec<Option<&str>> =
        hand_overs.iter().map(|(_, h)| h.autostart_schedule.as_deref()).collect();
    let ttl_secs: Vec<i64> = hand_overs.iter().map(|(_, h)| h.ttl_secs).collect();
    let next_starts: Vec<Option<DateTime<Utc>>> =
        hand_overs.iter().map(|(_, h)| h.next_start_at).collect();
    let job_ids: Vec<Uuid> = ids(|h| h.job_id);
    let inputs: Vec<&serde_json::Value> = hand_overs.iter().map(|(_, h)| &h.job_input).collect();
    let for_prebuilds: Vec<bool> = hand_overs.iter().map(|(_, h)| h.for_prebuild).collect();
    let build_ids: Vec<Uuid> = ids(|h| h.build_id);
    let versions: Vec<Uuid> = ids(|h| h.prebuild.template_version_id);
    let presets: Vec<Uuid> = ids(|h| h.preset_id);
    let states: Vec<Option<&[u8]>> =
        hand_overs.iter().map(|(_, h)| h.prebuild.provisioner_state.as_deref()).collect();
    let diffs: Vec<&serde_json::Value> = hand_overs.iter().map(|(_, h)| &h.diff).collect();
    Prepared::new(
        diesel::sql_query(HAND_OVER_BATCH_SQL)
            .bind::<Timestamptz, _>(now)
            .bind::<Array<SqlUuid>, _>(&workspace_ids)
            .bind::<Array<Int4>, _>(&build_numbers)
            .bind::<Array<SqlUuid>, _>(&user_ids)
            .bind::<Array<Text>, _>(&names)
            .bind::<Array<Nullable<Text>>, _>(&schedules)
            .bind::<Array<BigInt>, _>(&ttl_secs)
            .bind::<Array<Nullable<Timestamptz>>, _>(&next_starts)
            .bind::<Array<SqlUuid>, _>(&job_ids)
            .bind::<Array<Jsonb>, _>(&inputs)
            .bind::<Array<Bool>, _>(&for_prebuilds)
            .bind::<Array<SqlUuid>, _>(&build_ids)
            .bind::<Array<SqlUuid>, _>(&versions)
            .bind::<Array<SqlUuid>, _>(&presets)
            .bind::<Array<Nullable<Binary>>, _>(&states)
            .bind::<Array<Jsonb>, _>(&diffs)
            .bind::<Text, _>(Transition::Start)
            .bind::<Text, _>(BuildReason::Claim),
    )
    .load(conn)
    .await
}
