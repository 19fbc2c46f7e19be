//! Claiming a prebuild, or building a fresh workspace when none can be claimed
//! (rules §3 "Claim", §4 "Claim choice"). The choice comes from the core; this module only
//! loads the candidates and takes the first one it can lock.
//!
//! Many claimers of one preset arrive together, so a claim is kept to few statements: one
//! read checks the request while another, sent with it, loads a page of candidates (the
//! oldest few dozen), and one transaction locks the first candidate (in the core's order)
//! that is still claimable and not locked by another claim, then hands it over, with its
//! build, job and audit entry, in a second statement. The API's claims go through
//! [`ClaimBatcher`], which does the same for many concurrent claims at once.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Binary, Bool, Int4, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{
    AnsiTransactionManager, AsyncConnection, AsyncPgConnection, RunQueryDsl, TransactionManager,
};
use poolkeeper_core::prebuilds::{self as core_prebuilds, choose_claim, RunningPrebuild};
use poolkeeper_core::schedule::{next_autostart, CronSchedule};
use uuid::Uuid;

use super::audit::{self, Actor, Change};
use super::rows::{JobInput, Prepared};
use super::workspaces::{allowed_days, insert_build, BuildRequest};
use super::StoreError;
use crate::db::enums::{AutomaticUpdates, BuildReason, Transition};
use crate::db::models::{NewWorkspace, Preset, Template, Workspace, WorkspaceBuild};
use crate::db::schema::{presets, templates, workspaces};
use crate::db::{DbPool, PREBUILDS_USER_ID};

diesel::define_sql_function!(fn lower(text: Text) -> Text);

/// Locks up to `$limit` of the prebuilds in the array `$candidates` (in its order, the
/// core's), each still an unclaimed running prebuild of preset `$preset` owned by `$owner` and
/// not locked by another claim, with what the core judges a prebuild by; `rank` is its
/// position in the array. One claim's lock and a batch's (per preset) are this statement.
macro_rules! lock_candidates_sql {
    ($candidates:literal, $owner:literal, $preset:literal, $limit:literal) => {
        concat!(
            "SELECT c.rank, w.id, w.owner_id, w.name, w.created_at, lb.build_number,
       lb.template_version_id, lb.provisioner_state,
       NOT EXISTS (SELECT 1 FROM ",
            unready_builds!(),
            " nr WHERE nr.build_id = lb.id) AS ready,
       p.expiration_ttl_secs, p.invalidated_at
FROM unnest(",
            $candidates,
            ") WITH ORDINALITY AS c(id, rank)
JOIN workspaces w ON w.id = c.id
JOIN LATERAL (SELECT b.id, b.build_number, b.template_version_id, b.preset_id, b.transition,
                     b.provisioner_state, b.job_id
              FROM workspace_builds b WHERE b.workspace_id = w.id
              ORDER BY b.build_number DESC LIMIT 1) lb ON true
JOIN provisioner_jobs j ON j.id = lb.job_id
JOIN presets p ON p.id = lb.preset_id
WHERE w.owner_id = ",
            $owner,
            " AND NOT w.deleted AND w.deleting_at IS NULL
  AND lb.transition = 'start' AND lb.preset_id = ",
            $preset,
            " AND j.status = 'succeeded'
ORDER BY c.rank
LIMIT ",
            $limit,
            "
FOR UPDATE OF w SKIP LOCKED"
        )
    };
}

/// A validated request for a workspace (the API parsed it).
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub user_id: Uuid,
    pub template_id: Uuid,
    /// Only a preset's pool can be claimed from; without one a fresh workspace is built.
    pub preset_id: Option<Uuid>,
    pub name: String,
    pub autostart_schedule: Option<CronSchedule>,
    /// `None` = the template's default TTL.
    pub ttl_secs: Option<i64>,
    pub parameters: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClaimOutcome {
    pub workspace: Workspace,
    pub build: WorkspaceBuild,
    /// True when a prebuild was handed over, false when a fresh workspace was built.
    pub claimed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("template not found")]
    TemplateNotFound,
    #[error("preset not found in the template's active version")]
    PresetNotFound,
    #[error("{0}")]
    TemplateUnavailable(String),
    #[error("a workspace named {0:?} already exists")]
    NameTaken(String),
    /// The transaction that hands the prebuild over failed at its commit: whether the claim
    /// was made is unknown (the user's workspace list tells).
    #[error("the claim's commit failed, so it may or may not have been made: {0}")]
    CommitFailed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ClaimError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::TemplateNotFound => "template_not_found",
            Self::PresetNotFound => "preset_not_found",
            Self::TemplateUnavailable(_) => "template_unavailable",
            Self::NameTaken(_) => "name_taken",
            Self::CommitFailed(_) => "commit_failed",
            Self::Store(err) => err.label(),
        }
    }
}

impl From<diesel::result::Error> for ClaimError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Store(StoreError::Query(err))
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for ClaimError {
    fn from(err: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        Self::Store(err.into())
    }
}

/// Prebuilds a claim reads at a time, oldest first, and then gives one lock statement (which
/// reads every candidate it is given before it locks the first in the core's order). A large
/// pool is read a page at a time: the claimers of one preset check a few dozen prebuilds'
/// jobs and agents each, not the whole pool's, and a claim whose page is all held by other
/// claims, or judged unclaimable by the core, reads the next.
const CANDIDATES_PER_PAGE: usize = 32;

/// Hands the user the oldest ready prebuild of the preset, or builds a fresh workspace.
pub async fn claim_or_create(
    pool: &DbPool,
    now: DateTime<Utc>,
    request: &ClaimRequest,
) -> Result<ClaimOutcome, ClaimError> {
    let mut conn = pool.get().await?;
    // The request's read and the first page of the preset's candidates are sent together
    // (pipelined: one wait for the server); the page is used once the request checks out.
    let (read, mut first_page) = {
        let (mut for_request, mut for_page) = (&*conn, &*conn);
        let read = read_request(&mut for_request, request);
        match request.preset_id {
            Some(preset_id) => {
                let page = candidate_page(&mut for_page, preset_id, None);
                let (read, page) = futures_util::future::join(read, page).await;
                (read, Some(page))
            }
            None => (read.await, None),
        }
    };
    let (template, preset, name_taken) = read?.ok_or(ClaimError::TemplateNotFound)?;
    let active_version_id = usable_version(&template).map_err(ClaimError::TemplateUnavailable)?;
    if request.preset_id.is_some() && preset.is_none() {
        return Err(ClaimError::PresetNotFound);
    }
    if name_taken {
        return Err(ClaimError::NameTaken(request.name.clone()));
    }
    let ttl_secs = requested_ttl(&template, request.ttl_secs);
    let next_start_at = requested_next_start(&template, request, now);
    if let Some(preset) = &preset {
        let core_preset = core_preset(&template, preset)?;
        let mut after: Option<PageKey> = None;
        loop {
            let page = match first_page.take() {
                Some(page) => page?,
                None => candidate_page(&mut &*conn, preset.id, after.as_ref()).await?,
            };
            let more = page.len() >= CANDIDATES_PER_PAGE;
            if let Some(last) = page.last() {
                after =
                    Some(PageKey { listed_at: last.listed_at, workspace_id: last.workspace_id });
            }
            let running: Vec<RunningPrebuild> =
                page.into_iter().filter_map(|row| row.running(preset.id)).collect();
            let candidates = choose_claim(&running, &core_preset, now).candidates;
            let claimed = claim_one_of(
                &mut conn,
                candidates,
                &core_preset,
                request,
                ttl_secs,
                next_start_at,
                now,
            )
            .await?;
            if let Some(outcome) = claimed {
                return Ok(outcome);
            }
            if !more {
                break;
            }
        }
    }
    let outcome = conn
        .transaction::<_, ClaimError, _>(async |conn| {
            create_fresh(conn, &template, active_version_id, request, ttl_secs, next_start_at, now)
                .await
        })
        .await?;
    tracing::info!(workspace_id = %outcome.workspace.id, user_id = %request.user_id, "fresh workspace requested");
    Ok(outcome)
}

/// rules §3: the TTL a new workspace stores comes from the request, defaulting to the
/// template's; a template that does not let users choose imposes its own. (Not the core's
/// `effective_ttl`, which is the TTL a running build's deadline is computed with.)
fn requested_ttl(template: &Template, requested: Option<i64>) -> i64 {
    match requested {
        Some(ttl) if template.user_autostop_enabled => ttl,
        _ => template.default_ttl_secs,
    }
}

/// The version a workspace of `template` is made from, or why none can be made now.
fn usable_version(template: &Template) -> Result<Uuid, String> {
    let version = template
        .active_version_id
        .ok_or_else(|| "the template has no active version".to_owned())?;
    match &template.deprecation_message {
        Some(message) => Err(format!("the template is deprecated: {message}")),
        None => Ok(version),
    }
}

/// rules §3: `next_start_at` of the new owner's schedule, if the request gives one.
fn requested_next_start(
    template: &Template,
    request: &ClaimRequest,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let schedule = request.autostart_schedule.as_ref()?;
    next_autostart(now, schedule, allowed_days(template))
}

/// One read for the whole request: the template, the preset when one was asked for (only
/// in the template's active version), and whether the user already has a live workspace
/// of that name (case-insensitively). `None` = no such template.
async fn read_request(
    conn: &mut &AsyncPgConnection,
    request: &ClaimRequest,
) -> Result<Option<(Template, Option<Preset>, bool)>, diesel::result::Error> {
    let name_taken = diesel::dsl::exists(
        workspaces::table
            .filter(workspaces::owner_id.eq(request.user_id))
            // `NOT deleted` written out, not bound: the statement is prepared once per
            // connection, and only a literal lets its generic plan use the partial unique
            // index on (owner_id, lower(name)); a bound `deleted = $n` made it a scan of every
            // workspace, the bulk of a claim's time once there are many.
            .filter(diesel::dsl::not(workspaces::deleted))
            .filter(lower(workspaces::name).eq(lower(&request.name))),
    );
    templates::table
        .left_join(
            presets::table.on(presets::id
                .nullable()
                .eq(request.preset_id)
                .and(presets::template_version_id.nullable().eq(templates::active_version_id))),
        )
        .filter(templates::id.eq(request.template_id))
        .filter(templates::deleted.eq(false))
        .select((Template::as_select(), Option::<Preset>::as_select(), name_taken))
        .first(conn)
        .await
        .optional()
}

/// Begins a transaction whose statements run on their prepared statements' generic plans.
/// A claim's statements take arrays (candidates, a batch's rows); planned for the values at
/// hand, PostgreSQL's estimate from the array's length always beats the generic plan's
/// default, so it never settles on the generic plan and plans every execution anew, which
/// costs more than running them (a claimer alone took 5 ms instead of under 2). Each
/// statement is written so that its generic plan is the right one. The setting ends with the
/// transaction (`SET LOCAL`), so the pooled connection's other users are not affected.
async fn begin_on_generic_plans(conn: &mut AsyncPgConnection) -> Result<(), ClaimError> {
    const BEGIN: &str = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan";
    Ok(AnsiTransactionManager::begin_transaction_sql(conn, BEGIN).await?)
}

/// Ends the transaction `begin_on_generic_plans` began, as diesel's `transaction` does:
/// commits after `result` succeeded, rolls back after it failed.
async fn end_transaction<R>(
    conn: &mut AsyncPgConnection,
    result: Result<R, ClaimError>,
) -> Result<R, ClaimError> {
    match result {
        Ok(value) => {
            AnsiTransactionManager::commit_transaction(conn).await?;
            Ok(value)
        }
        Err(err) => Err(roll_back(conn, err).await),
    }
}

/// Rolls back the transaction after `err`; the error to report.
async fn roll_back(conn: &mut AsyncPgConnection, err: ClaimError) -> ClaimError {
    match AnsiTransactionManager::rollback_transaction(conn).await {
        // The first error says more than a rollback the broken connection refused.
        Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => err,
        Err(rollback) => rollback.into(),
    }
}

/// What one claim transaction did.
enum Attempt {
    Claimed(Box<ClaimOutcome>),
    /// Every candidate given is locked by another claim or no longer claimable.
    NoneLeft,
    /// The locked candidate is no longer claimable (its agent stopped being ready, it
    /// expired, or it got a newer build: the reconciler queued its delete): nothing was
    /// written; try the others.
    Superseded(Uuid),
}

/// The first of `candidates`, in their order, that is still an unclaimed running prebuild
/// of the preset and not locked by another claim; locked `FOR UPDATE`. The order is the
/// core's choice: SQL only filters and locks. It also returns what the core judges a
/// prebuild by (readiness, age, the preset's expiry settings), read by this statement's
/// snapshot, which is taken after any lock wait: a prebuild whose agent stopped being ready
/// or that expired while the claim waited is judged as it is now.
const LOCK_FIRST_CLAIMABLE_SQL: &str = lock_candidates_sql!("$1::uuid[]", "$2", "$3", "1");

#[derive(QueryableByName)]
struct LockedPrebuild {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    owner_id: Uuid,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Int4)]
    build_number: i32,
    #[diesel(sql_type = SqlUuid)]
    template_version_id: Uuid,
    #[diesel(sql_type = Nullable<Binary>)]
    provisioner_state: Option<Vec<u8>>,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Bool)]
    ready: bool,
    #[diesel(sql_type = BigInt)]
    expiration_ttl_secs: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    invalidated_at: Option<DateTime<Utc>>,
}

impl LockedPrebuild {
    /// Whether the core still hands this prebuild out, judged by what was read under the
    /// lock (rules §4 "Claim choice"): ready, not expired, of the preset's version.
    fn still_claimable(&self, preset: &core_prebuilds::Preset, now: DateTime<Utc>) -> bool {
        let preset = core_prebuilds::Preset {
            expiration_ttl_secs: u64::try_from(self.expiration_ttl_secs).unwrap_or(0),
            invalidated_at: self.invalidated_at,
            ..preset.clone()
        };
        let row = RunningPrebuild {
            workspace_id: self.id,
            preset_id: preset.id,
            template_version_id: self.template_version_id,
            created_at: self.created_at,
            ready: self.ready,
        };
        choose_claim(&[row], &preset, now).chosen() == Some(self.id)
    }
}

/// The hand-over: the workspace changes owner, and its next build, that build's job and
/// the audit entry are written with it. Guarded by "no build newer than the one read under
/// the lock", checked on this statement's own, later snapshot: a delete the reconciler
/// committed just before the lock was taken leaves everything unwritten (no row). Binds are
/// named in the file.
const HAND_OVER_SQL: &str = include_str!("../sql/claim_hand_over.sql");

/// Hands over the first of `candidates` (in the core's order) that can still be claimed,
/// one transaction per try; `None` when every one is held by another claim or superseded.
async fn claim_one_of(
    conn: &mut AsyncPgConnection,
    mut candidates: Vec<Uuid>,
    preset: &core_prebuilds::Preset,
    request: &ClaimRequest,
    ttl_secs: i64,
    next_start_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Option<ClaimOutcome>, ClaimError> {
    while !candidates.is_empty() {
        begin_on_generic_plans(conn).await?;
        let attempt =
            claim_first(conn, &candidates, preset, request, ttl_secs, next_start_at, now).await;
        let attempt = end_transaction(conn, attempt).await?;
        match attempt {
            Attempt::Claimed(outcome) => return Ok(Some(*outcome)),
            // Every one left is locked by another claim or no longer claimable.
            Attempt::NoneLeft => break,
            Attempt::Superseded(workspace_id) => {
                tracing::debug!(%workspace_id, "claim candidate no longer claimable, trying the rest");
                candidates.retain(|candidate| *candidate != workspace_id);
            }
        }
    }
    Ok(None)
}

/// Locks the first claimable of `candidates` and hands it over.
async fn claim_first(
    conn: &mut AsyncPgConnection,
    candidates: &[Uuid],
    preset: &core_prebuilds::Preset,
    request: &ClaimRequest,
    ttl_secs: i64,
    next_start_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Attempt, ClaimError> {
    let locked: Option<LockedPrebuild> = Prepared::new(
        diesel::sql_query(LOCK_FIRST_CLAIMABLE_SQL)
            .bind::<Array<SqlUuid>, _>(candidates)
            .bind::<SqlUuid, _>(PREBUILDS_USER_ID)
            .bind::<SqlUuid, _>(preset.id),
    )
    .get_result(conn)
    .await
    .optional()?;
    let Some(prebuild) = locked else { return Ok(Attempt::NoneLeft) };
    if !prebuild.still_claimable(preset, now) {
        return Ok(Attempt::Superseded(prebuild.id));
    }
    let hand_over = HandOver::new(prebuild, preset.id, request, ttl_secs, next_start_at);
    let handed: Option<Workspace> = Prepared::new(
        diesel::sql_query(HAND_OVER_SQL)
            .bind::<SqlUuid, _>(hand_over.user_id)
            .bind::<Text, _>(&hand_over.name)
            .bind::<Nullable<Text>, _>(&hand_over.autostart_schedule)
            .bind::<BigInt, _>(hand_over.ttl_secs)
            .bind::<Nullable<Timestamptz>, _>(hand_over.next_start_at)
            .bind::<Timestamptz, _>(now)
            .bind::<SqlUuid, _>(hand_over.prebuild.id)
            .bind::<Int4, _>(hand_over.prebuild.build_number)
            .bind::<SqlUuid, _>(hand_over.job_id)
            .bind::<Jsonb, _>(&hand_over.job_input)
            .bind::<Bool, _>(hand_over.for_prebuild)
            .bind::<Text, _>(Transition::Start)
            .bind::<SqlUuid, _>(hand_over.build_id)
            .bind::<SqlUuid, _>(hand_over.prebuild.template_version_id)
            .bind::<Nullable<SqlUuid>, _>(Some(hand_over.preset_id))
            .bind::<Text, _>(BuildReason::Claim)
            .bind::<Nullable<Binary>, _>(&hand_over.prebuild.provisioner_state)
            .bind::<Jsonb, _>(&hand_over.diff),
    )
    .get_result(conn)
    .await
    .optional()
    .map_err(|err| name_error(err, &request.name))?;
    let Some(workspace) = handed else { return Ok(Attempt::Superseded(hand_over.prebuild.id)) };
    Ok(Attempt::Claimed(Box::new(hand_over.outcome(workspace))))
}

/// One hand-over's values: what its statement writes (the one-by-one or the batch's), and
/// the outcome the claim returns once it is written.
struct HandOver {
    prebuild: LockedPrebuild,
    preset_id: Uuid,
    user_id: Uuid,
    name: String,
    autostart_schedule: Option<String>,
    ttl_secs: i64,
    next_start_at: Option<DateTime<Utc>>,
    job_id: Uuid,
    job_input: serde_json::Value,
    /// Whether the new job builds a prebuild: only when the prebuilds user claims one.
    for_prebuild: bool,
    build_id: Uuid,
    /// The audit entry's diff.
    diff: serde_json::Value,
}

impl HandOver {
    fn new(
        prebuild: LockedPrebuild,
        preset_id: Uuid,
        request: &ClaimRequest,
        ttl_secs: i64,
        next_start_at: Option<DateTime<Utc>>,
    ) -> Self {
        let (job_id, build_id) = (Uuid::new_v4(), Uuid::new_v4());
        let autostart_schedule = request.autostart_schedule.as_ref().map(|s| s.source().to_owned());
        let parameters = parameters_json(&request.parameters);
        let job_input = JobInput {
            workspace_id: prebuild.id,
            build_id,
            template_version_id: prebuild.template_version_id,
            transition: Transition::Start,
            parameters: Some(&parameters),
        }
        .to_json();
        let diff = serde_json::json!({
            "preset_id": preset_id,
            "build_id": build_id,
            "old": { "owner_id": prebuild.owner_id, "name": prebuild.name },
            "new": {
                "owner_id": request.user_id,
                "name": request.name,
                "autostart_schedule": autostart_schedule,
                "ttl_secs": ttl_secs,
            },
        });
        Self {
            prebuild,
            preset_id,
            user_id: request.user_id,
            name: request.name.clone(),
            autostart_schedule,
            ttl_secs,
            next_start_at,
            job_id,
            job_input,
            for_prebuild: request.user_id == PREBUILDS_USER_ID,
            build_id,
            diff,
        }
    }

    /// The claim's outcome, `workspace` being the handed-over row as the statement returned
    /// it. The build is exactly what the statement inserted: no need to read it back.
    fn outcome(self, workspace: Workspace) -> ClaimOutcome {
        tracing::info!(
            workspace_id = %workspace.id,
            user_id = %self.user_id,
            preset_id = %self.preset_id,
            "prebuild claimed"
        );
        let build = WorkspaceBuild {
            id: self.build_id,
            workspace_id: workspace.id,
            build_number: self.prebuild.build_number + 1,
            template_version_id: self.prebuild.template_version_id,
            preset_id: Some(self.preset_id),
            transition: Transition::Start,
            reason: BuildReason::Claim,
            initiator_id: self.user_id,
            job_id: self.job_id,
            deadline: None,
            max_deadline: None,
            provisioner_state: self.prebuild.provisioner_state,
            // `now` as stored (microseconds), which the hand-over also wrote here.
            created_at: workspace.updated_at,
        };
        ClaimOutcome { workspace, build, claimed: true }
    }
}

async fn create_fresh(
    conn: &mut AsyncPgConnection,
    template: &Template,
    version_id: Uuid,
    request: &ClaimRequest,
    ttl_secs: i64,
    next_start_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<ClaimOutcome, ClaimError> {
    let workspace: Workspace = diesel::insert_into(workspaces::table)
        .values(NewWorkspace {
            id: Uuid::new_v4(),
            organization_id: template.organization_id,
            owner_id: request.user_id,
            template_id: template.id,
            name: request.name.clone(),
            autostart_schedule: request.autostart_schedule.as_ref().map(|s| s.source().to_owned()),
            ttl_secs,
            next_start_at,
            automatic_updates: AutomaticUpdates::Never,
            last_used_at: Some(now),
            created_at: Some(now),
        })
        .returning(Workspace::as_returning())
        .get_result(conn)
        .await
        .map_err(|err| name_error(err, &request.name))?;
    let build = insert_build(
        conn,
        &workspace,
        1,
        BuildRequest {
            transition: Transition::Start,
            reason: BuildReason::Initiator,
            initiator_id: request.user_id,
            template_version_id: version_id,
            preset_id: request.preset_id,
            provisioner_state: None,
            parameters: parameters_json(&request.parameters),
        },
        now,
    )
    .await?;
    let change = Change {
        action: "workspace_create",
        resource_type: "workspace",
        resource_id: Some(workspace.id),
        diff: serde_json::json!({
            "preset_id": request.preset_id,
            "build_id": build.id,
            "new": {
                "owner_id": workspace.owner_id,
                "name": workspace.name,
                "template_id": workspace.template_id,
                "template_version_id": version_id,
                "autostart_schedule": workspace.autostart_schedule,
                "ttl_secs": workspace.ttl_secs,
            },
        }),
    };
    let actor = Actor::of_user(conn, request.user_id).await?;
    audit::record(conn, now, &actor, change).await?;
    Ok(ClaimOutcome { workspace, build, claimed: false })
}

fn name_error(err: diesel::result::Error, name: &str) -> ClaimError {
    match err {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        ) => ClaimError::NameTaken(name.to_owned()),
        other => other.into(),
    }
}

fn parameters_json(parameters: &BTreeMap<String, String>) -> serde_json::Value {
    serde_json::Value::Object(
        parameters.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect(),
    )
}

/// Where a page of candidates starts: after this (workspace creation, workspace id), the
/// order in which claims take prebuilds (rules §4 "Claim choice": oldest first, ties by id).
struct PageKey {
    listed_at: DateTime<Utc>,
    workspace_id: Uuid,
}

#[derive(QueryableByName)]
struct CandidateRow {
    #[diesel(sql_type = SqlUuid)]
    workspace_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    template_version_id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    /// The workspace's creation as the index of claimable prebuilds lists it (the same
    /// instant): where the next page starts.
    #[diesel(sql_type = Timestamptz)]
    listed_at: DateTime<Utc>,
    /// Its start build's job succeeded: it is running, not still being built.
    #[diesel(sql_type = Bool)]
    succeeded: bool,
    #[diesel(sql_type = Bool)]
    ready: bool,
}

impl CandidateRow {
    /// The row in the core's shape when the prebuild is running.
    fn running(self, preset_id: Uuid) -> Option<RunningPrebuild> {
        self.succeeded.then_some(RunningPrebuild {
            workspace_id: self.workspace_id,
            preset_id,
            template_version_id: self.template_version_id,
            created_at: self.created_at,
            ready: self.ready,
        })
    }
}

/// The next page of the preset's live prebuilds whose latest build is a start, in the order
/// claims take them (after `after`), with whether that build's job succeeded and whether its
/// agents are all ready. A page is a range of the index of claimable prebuilds in claim order
/// (`prebuild_live` start builds by preset, workspace creation and id: set as a prebuild's
/// start build is inserted, cleared by the hand-over and by a completed delete), so a claim
/// reads a few dozen prebuilds however large the pool and however many builds people made
/// from the preset. The core still chooses within the page, by the workspace's own row.
async fn candidate_page(
    conn: &mut &AsyncPgConnection,
    preset_id: Uuid,
    after: Option<&PageKey>,
) -> Result<Vec<CandidateRow>, diesel::result::Error> {
    let page = diesel::sql_query(if after.is_some() { NEXT_PAGE_SQL } else { FIRST_PAGE_SQL })
        .bind::<SqlUuid, _>(PREBUILDS_USER_ID)
        .bind::<SqlUuid, _>(preset_id);
    match after {
        None => Prepared::new(page).load(conn).await,
        Some(after) => {
            let page =
                page.bind::<Timestamptz, _>(after.listed_at).bind::<SqlUuid, _>(after.workspace_id);
            Prepared::new(page).load(conn).await
        }
    }
}

/// A page of candidates; `$after` is the condition that starts it after the previous one.
/// The page's size is written out (`CANDIDATES_PER_PAGE`), not bound, and the first page has
/// a statement of its own: with a bound limit or a lower bound on every read, PostgreSQL
/// never trusted the prepared statement's generic plan and planned every claim's read anew,
/// which cost more than the read.
macro_rules! candidate_page_sql {
    ($preset:literal, $after:literal, $limit:literal) => {
        concat!(
            "SELECT b.workspace_id, b.template_version_id, w.created_at,
                    b.prebuild_created_at AS listed_at, j.status = 'succeeded' AS succeeded,
                    NOT EXISTS (SELECT 1 FROM ",
            unready_builds!(),
            " nr WHERE nr.build_id = b.id) AS ready
             FROM workspace_builds b
             JOIN workspaces w ON w.id = b.workspace_id
             JOIN provisioner_jobs j ON j.id = b.job_id
             WHERE b.preset_id = ",
            $preset,
            " AND b.prebuild_live ",
            $after,
            "
               AND b.transition = 'start'
               AND w.owner_id = $1 AND NOT w.deleted AND w.deleting_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM workspace_builds later
                               WHERE later.workspace_id = b.workspace_id
                                 AND later.build_number > b.build_number)
             ORDER BY b.prebuild_created_at, b.workspace_id
             LIMIT ",
            $limit
        )
    };
}

const FIRST_PAGE_SQL: &str = candidate_page_sql!("$2", "", "32");
const NEXT_PAGE_SQL: &str =
    candidate_page_sql!("$2", "AND (b.prebuild_created_at, b.workspace_id) > ($3, $4)", "32");

/// The preset as the core's claim choice sees it (schedules do not matter to a claim).
fn core_preset(template: &Template, preset: &Preset) -> Result<core_prebuilds::Preset, ClaimError> {
    super::convert::core_preset(super::convert::StoredPreset {
        id: preset.id,
        name: preset.name.clone(),
        template_id: template.id,
        template_version_id: preset.template_version_id,
        using_active_version: template.active_version_id == Some(preset.template_version_id),
        template_deleted: template.deleted,
        template_deprecated: template.deprecation_message.is_some(),
        desired_instances: preset.desired_instances,
        expiration_ttl_secs: preset.expiration_ttl_secs,
        scheduling_timezone: preset.scheduling_timezone.clone(),
        schedule_lead_secs: preset.schedule_lead_secs,
        invalidated_at: preset.invalidated_at,
        status: preset.prebuild_status,
        schedules: Vec::new(),
        // Autoscaling sizes the pool; a claim does not read it.
        autoscale: None,
    })
    .map_err(|why| ClaimError::TemplateUnavailable(format!("the preset is unreadable: {why}")))
}

// After the statement macros above, which the batch's statements are built from.
mod batch;

pub use batch::ClaimBatcher;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_statement_reads_a_page() {
        for sql in [FIRST_PAGE_SQL, NEXT_PAGE_SQL] {
            assert!(sql.ends_with(&format!("LIMIT {CANDIDATES_PER_PAGE}")));
        }
    }
}
