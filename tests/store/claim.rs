//! The claim path of the store against a real PostgreSQL: which prebuild a claim takes
//! when another claim holds one, which it passes over, and what it writes.

use poolkeeper_tests::seed;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use poolkeeper::db::enums::{BuildReason, JobStatus, Transition};
use poolkeeper::db::models::{AuditEntry, ProvisionerJob};
use poolkeeper::db::schema::{audit_log, provisioner_jobs, workspaces};
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::db::PREBUILDS_USER_ID;
use poolkeeper::store::claim::{claim_or_create, ClaimError, ClaimOutcome, ClaimRequest};
use seed::WorkspaceSeed;
use uuid::Uuid;

pub(crate) struct Pool {
    template_id: Uuid,
    version_id: Uuid,
    pub(crate) preset_id: Uuid,
    /// Oldest first: the order in which claims take them.
    pub(crate) prebuilds: Vec<Uuid>,
}

/// A preset with `n` ready prebuilds, created a minute apart.
async fn pool_of(db: &TestDatabase, n: usize) -> Pool {
    pool_named(db, "go", n).await
}

/// A preset of a new template named `template` with `n` ready prebuilds, a minute apart.
pub(crate) async fn pool_named(db: &TestDatabase, template: &str, n: usize) -> Pool {
    let mut conn = db.conn().await;
    let (template_id, version_id) = seed::template(&mut conn, template).await;
    let preset_id = seed::preset(&mut conn, version_id, "small", 3).await;
    let mut prebuilds = Vec::new();
    for i in 0..n {
        let created = Utc::now() - TimeDelta::minutes(60 - i as i64);
        let seed = WorkspaceSeed::prebuild(template_id, version_id, preset_id, created);
        prebuilds.push(seed::workspace(&mut conn, seed).await);
    }
    Pool { template_id, version_id, preset_id, prebuilds }
}

pub(crate) fn request(pool: &Pool, user_id: Uuid, name: &str) -> ClaimRequest {
    ClaimRequest {
        user_id,
        template_id: pool.template_id,
        preset_id: Some(pool.preset_id),
        name: name.to_owned(),
        autostart_schedule: None,
        ttl_secs: None,
        parameters: BTreeMap::from([("region".to_owned(), "eu".to_owned())]),
    }
}

/// A claim, capped generously: the locks the tests hold are released only after the claim
/// returns, so a claim that waited for one would never return (or end in a lock timeout
/// error); the outcome, not the cap, shows that it passed the lock over.
async fn claim(db: &TestDatabase, request: &ClaimRequest) -> Result<ClaimOutcome, ClaimError> {
    tokio::time::timeout(Duration::from_secs(60), claim_or_create(db.pool(), Utc::now(), request))
        .await
        .expect("a claim never waits for another claim's lock")
}

#[tokio::test]
async fn a_claim_passes_over_a_prebuild_another_claim_holds() {
    let db = TestDatabase::new().await;
    let pool = pool_of(&db, 2).await;
    let mut conn = db.conn().await;
    let alice = seed::user(&mut conn, "alice").await;
    let bob = seed::user(&mut conn, "bob").await;

    // Another claim is in the middle of handing over the oldest one.
    let mut holder = AsyncPgConnection::establish(db.url()).await.expect("holder connection");
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM workspaces WHERE id = '{}' FOR UPDATE",
            pool.prebuilds[0]
        ))
        .await
        .expect("hold the oldest prebuild");
    let first = claim(&db, &request(&pool, alice, "dev")).await.expect("claim");
    assert!(first.claimed);
    assert_eq!(first.workspace.id, pool.prebuilds[1], "the next oldest, without waiting");
    holder.batch_execute("ROLLBACK").await.expect("release");

    let second = claim(&db, &request(&pool, bob, "dev")).await.expect("claim");
    assert!(second.claimed);
    assert_eq!(second.workspace.id, pool.prebuilds[0]);
    assert_eq!(second.workspace.owner_id, bob);
    assert_eq!(second.workspace.name, "dev");

    // Nothing left: a fresh workspace.
    let carol = seed::user(&mut conn, "carol").await;
    let third = claim(&db, &request(&pool, carol, "dev")).await.expect("create");
    assert!(!third.claimed);
    assert_eq!(third.build.build_number, 1);
}

#[tokio::test]
async fn a_claim_writes_the_build_its_job_and_the_audit_entry() {
    let db = TestDatabase::new().await;
    let pool = pool_of(&db, 1).await;
    let mut conn = db.conn().await;
    let alice = seed::user(&mut conn, "alice").await;
    let outcome = claim(&db, &request(&pool, alice, "dev")).await.expect("claim");
    assert!(outcome.claimed);
    let (workspace, build) = (&outcome.workspace, &outcome.build);
    assert_eq!(workspace.id, pool.prebuilds[0]);
    assert_eq!(workspace.owner_id, alice);
    assert_eq!(workspace.dormant_at, None);
    assert_eq!(workspace.deleting_at, None);
    assert_eq!(build.workspace_id, workspace.id);
    assert_eq!(build.build_number, 2);
    assert_eq!(build.transition, Transition::Start);
    assert_eq!(build.reason, BuildReason::Claim);
    assert_eq!(build.initiator_id, alice);
    assert_eq!(build.preset_id, Some(pool.preset_id));
    assert_eq!(build.template_version_id, pool.version_id);

    let job: ProvisionerJob = provisioner_jobs::table
        .find(build.job_id)
        .select(ProvisionerJob::as_select())
        .first(&mut conn)
        .await
        .expect("job");
    assert_eq!(job.status, JobStatus::Pending);
    assert!(!job.for_prebuild);
    assert_eq!(
        job.input,
        serde_json::json!({
            "workspace_id": workspace.id,
            "build_id": build.id,
            "template_version_id": pool.version_id,
            "transition": "start",
            "parameters": { "region": "eu" },
        })
    );
    // The build the claim returns is the one it wrote.
    let stored: poolkeeper::db::models::WorkspaceBuild =
        poolkeeper::db::schema::workspace_builds::table
            .find(build.id)
            .select(poolkeeper::db::models::WorkspaceBuild::as_select())
            .first(&mut conn)
            .await
            .expect("build");
    assert_eq!(&stored, build);

    let entry: AuditEntry = audit_log::table
        .filter(audit_log::action.eq("workspace_claim"))
        .select(AuditEntry::as_select())
        .first(&mut conn)
        .await
        .expect("audit entry");
    assert_eq!(entry.actor_id, Some(alice));
    assert_eq!(entry.actor, "alice");
    assert_eq!(entry.resource_type, "workspace");
    assert_eq!(entry.resource_id, Some(workspace.id));
    assert_eq!(
        entry.diff,
        serde_json::json!({
            "preset_id": pool.preset_id,
            "build_id": build.id,
            "old": { "owner_id": PREBUILDS_USER_ID, "name": format!("ws-{}", workspace.id.simple()) },
            "new": { "owner_id": alice, "name": "dev", "autostart_schedule": null, "ttl_secs": 0 },
        })
    );
}

#[tokio::test]
async fn a_prebuild_with_a_queued_delete_is_not_claimed() {
    let db = TestDatabase::new().await;
    let pool = pool_of(&db, 2).await;
    let mut conn = db.conn().await;
    let alice = seed::user(&mut conn, "alice").await;
    // The reconciler queued the oldest one's delete.
    let delete = WorkspaceSeed {
        transition: Transition::Delete,
        status: JobStatus::Pending,
        ..WorkspaceSeed::prebuild(pool.template_id, pool.version_id, pool.preset_id, Utc::now())
    };
    seed::build(&mut conn, pool.prebuilds[0], 2, &delete).await;
    let outcome = claim(&db, &request(&pool, alice, "dev")).await.expect("claim");
    assert!(outcome.claimed);
    assert_eq!(outcome.workspace.id, pool.prebuilds[1]);
}

#[tokio::test]
async fn a_taken_name_fails_the_claim_and_writes_nothing() {
    let db = TestDatabase::new().await;
    let pool = pool_of(&db, 1).await;
    let mut conn = db.conn().await;
    let alice = seed::user(&mut conn, "alice").await;
    claim(&db, &request(&pool, alice, "Dev")).await.expect("claim");
    let entries = "SELECT count(*) AS n FROM audit_log";
    let before = seed::count(&mut conn, entries).await;

    let again = claim(&db, &request(&pool, alice, "DEV")).await;
    assert!(matches!(again, Err(ClaimError::NameTaken(ref name)) if name == "DEV"), "{again:?}");
    assert_eq!(seed::count(&mut conn, entries).await, before);
    let owned: i64 = workspaces::table
        .filter(workspaces::owner_id.eq(alice))
        .count()
        .get_result(&mut conn)
        .await
        .expect("count");
    assert_eq!(owned, 1);
}

/// Holds `workspaces` so that a claim's row lock waits, runs `change` while it waits, then
/// lets it go: the claim must judge the prebuild as it is after the wait. Returns the claim's
/// outcome and how many lock waits were seen (the proof the claim was caught in the gap).
async fn claim_across_a_change(
    db: &TestDatabase,
    request: &ClaimRequest,
    change: &str,
) -> (ClaimOutcome, i64) {
    let mut holder = AsyncPgConnection::establish(db.url()).await.expect("holder connection");
    // Plain reads pass this mode; the claim's `FOR UPDATE` (ROW SHARE) waits for it.
    holder
        .batch_execute("BEGIN; LOCK TABLE workspaces IN EXCLUSIVE MODE")
        .await
        .expect("hold workspaces");
    let claimer = tokio::spawn({
        let pool = db.pool().clone();
        let request = request.clone();
        async move { claim_or_create(&pool, Utc::now(), &request).await }
    });
    let mut conn = db.conn().await;
    let waiting = "SELECT count(*) AS n FROM pg_stat_activity
                   WHERE wait_event_type = 'Lock' AND datname = current_database()
                     AND query LIKE '%FOR UPDATE OF w SKIP LOCKED%'";
    let mut waits = 0;
    for _ in 0..600 {
        waits = seed::count(&mut conn, waiting).await;
        if waits > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    holder.batch_execute(&format!("{change}; COMMIT")).await.expect("change and release");
    let outcome = tokio::time::timeout(Duration::from_secs(60), claimer)
        .await
        .expect("the claim ends once the lock is released")
        .expect("claim task")
        .expect("claim");
    (outcome, waits)
}

#[tokio::test]
async fn a_prebuild_whose_agent_stopped_being_ready_during_the_lock_wait_is_not_handed_over() {
    let db = TestDatabase::new().await;
    let pool = pool_of(&db, 1).await;
    let mut conn = db.conn().await;
    let alice = seed::user(&mut conn, "alice").await;
    let change = format!(
        "UPDATE workspace_agents SET lifecycle_state = 'starting'
          WHERE build_id IN (SELECT id FROM workspace_builds WHERE workspace_id = '{}')",
        pool.prebuilds[0]
    );
    let (outcome, waits) = claim_across_a_change(&db, &request(&pool, alice, "dev"), &change).await;
    assert_eq!(waits, 1, "the claim waited for the lock while its prebuild changed");
    assert!(!outcome.claimed, "a prebuild that is no longer ready is not handed over");
    assert_ne!(outcome.workspace.id, pool.prebuilds[0]);
    let owner: Uuid = workspaces::table
        .find(pool.prebuilds[0])
        .select(workspaces::owner_id)
        .first(&mut conn)
        .await
        .expect("prebuild");
    assert_eq!(owner, PREBUILDS_USER_ID);
}

#[tokio::test]
async fn a_prebuild_expired_by_an_invalidation_during_the_lock_wait_is_not_handed_over() {
    let db = TestDatabase::new().await;
    let pool = pool_of(&db, 1).await;
    let mut conn = db.conn().await;
    let alice = seed::user(&mut conn, "alice").await;
    let change =
        format!("UPDATE presets SET invalidated_at = now() WHERE id = '{}'", pool.preset_id);
    let (outcome, waits) = claim_across_a_change(&db, &request(&pool, alice, "dev"), &change).await;
    assert_eq!(waits, 1, "the claim waited for the lock while its preset changed");
    assert!(!outcome.claimed, "an expired prebuild is not handed over");
    assert_ne!(outcome.workspace.id, pool.prebuilds[0]);
}

/// A person's running workspace made from the preset: its builds carry the preset too.
fn person_build(pool: &Pool, owner_id: Uuid, transition: Transition) -> WorkspaceSeed {
    WorkspaceSeed {
        preset_id: Some(pool.preset_id),
        ..WorkspaceSeed::owned(owner_id, pool.template_id, pool.version_id, transition, Utc::now())
    }
}

/// However long the history of the preset's builds grows (claimed workspaces keep building
/// with the preset; people create workspaces from it), a claim's candidates are the preset's
/// live prebuilds, oldest first: a claimed workspace whose latest build is a ready, succeeded
/// start of the preset never comes back, nor does a deleted prebuild.
#[tokio::test]
async fn claims_take_only_live_prebuilds_however_long_the_preset_history() {
    let db = TestDatabase::new().await;
    let pool = pool_of(&db, 3).await;
    let mut conn = db.conn().await;
    let alice = seed::user(&mut conn, "alice").await;
    let first = claim(&db, &request(&pool, alice, "dev")).await.expect("claim");
    assert_eq!(first.workspace.id, pool.prebuilds[0]);
    seed::complete_pending_jobs(&mut conn, Utc::now()).await;
    // Alice's workspace stops and starts with the preset; its latest build is a ready start.
    for number in 3..=29 {
        let transition = if number % 2 == 0 { Transition::Stop } else { Transition::Start };
        seed::build(&mut conn, first.workspace.id, number, &person_build(&pool, alice, transition))
            .await;
    }
    // A workspace alice built from the preset herself, running.
    seed::workspace(&mut conn, person_build(&pool, alice, Transition::Start)).await;
    // A prebuild that is gone, though its latest build is a ready start.
    let gone = seed::workspace(
        &mut conn,
        WorkspaceSeed::prebuild(pool.template_id, pool.version_id, pool.preset_id, Utc::now()),
    )
    .await;
    diesel::update(workspaces::table.find(gone))
        .set(workspaces::deleted.eq(true))
        .execute(&mut conn)
        .await
        .expect("delete");

    let mut handed = Vec::new();
    for name in ["bob", "carol", "dave"] {
        let user = seed::user(&mut conn, name).await;
        let outcome = claim(&db, &request(&pool, user, "dev")).await.expect("claim");
        handed.push(outcome.claimed.then_some(outcome.workspace.id));
    }
    assert_eq!(
        handed,
        [Some(pool.prebuilds[1]), Some(pool.prebuilds[2]), None],
        "the two live prebuilds, oldest first, then a fresh workspace"
    );
}

/// A claim tries a large pool a slice at a time (32 prebuilds per statement): when every
/// prebuild of the first slice is held by other claims, it takes the oldest of the next.
#[tokio::test]
async fn a_claim_goes_past_a_slice_of_held_prebuilds() {
    let db = TestDatabase::new().await;
    let pool = pool_of(&db, 34).await;
    let mut conn = db.conn().await;
    let alice = seed::user(&mut conn, "alice").await;
    let held: Vec<String> = pool.prebuilds[..33].iter().map(|id| format!("'{id}'")).collect();
    let mut holder = AsyncPgConnection::establish(db.url()).await.expect("holder connection");
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM workspaces WHERE id IN ({}) FOR UPDATE",
            held.join(", ")
        ))
        .await
        .expect("hold the oldest 33");
    let outcome = claim(&db, &request(&pool, alice, "dev")).await.expect("claim");
    assert!(outcome.claimed);
    assert_eq!(outcome.workspace.id, pool.prebuilds[33], "the oldest one not held");
    holder.batch_execute("ROLLBACK").await.expect("release");
}

async fn listed_prebuilds(conn: &mut AsyncPgConnection) -> Vec<Uuid> {
    use poolkeeper::db::schema::workspace_builds;
    workspace_builds::table
        .filter(workspace_builds::prebuild_live)
        .select(workspace_builds::workspace_id)
        .order(workspace_builds::workspace_id)
        .load(conn)
        .await
        .expect("listed prebuilds")
}

/// A prebuild's start build is listed among the claimable (`prebuild_live`) as it is inserted,
/// whoever inserts it; a person's build never is, and the hand-over takes the claimed
/// workspace off the list for good.
#[tokio::test]
async fn a_prebuild_is_listed_until_it_is_claimed() {
    let db = TestDatabase::new().await;
    let pool = pool_of(&db, 2).await;
    let mut conn = db.conn().await;
    let alice = seed::user(&mut conn, "alice").await;
    seed::workspace(&mut conn, person_build(&pool, alice, Transition::Start)).await;
    let mut expected = pool.prebuilds.clone();
    expected.sort();
    assert_eq!(listed_prebuilds(&mut conn).await, expected);

    let outcome = claim(&db, &request(&pool, alice, "dev")).await.expect("claim");
    assert!(outcome.claimed);
    expected.retain(|id| *id != outcome.workspace.id);
    assert_eq!(listed_prebuilds(&mut conn).await, expected);
    // The claim's own build (a start of the preset, by alice) is not listed either.
    seed::complete_pending_jobs(&mut conn, Utc::now()).await;
    assert_eq!(listed_prebuilds(&mut conn).await, expected);
}

/// A claim reads the pool a page at a time (32 prebuilds), oldest first: when the oldest
/// prebuilds cannot be claimed (their agents are not ready, or they are still being built),
/// it reads on and takes the oldest one that can, however many pages that takes.
#[tokio::test]
async fn a_claim_reads_past_pages_of_prebuilds_it_cannot_take() {
    let db = TestDatabase::new().await;
    let pool = pool_of(&db, 70).await;
    let mut conn = db.conn().await;
    let alice = seed::user(&mut conn, "alice").await;
    let ids = |range: std::ops::Range<usize>| {
        let quoted: Vec<String> =
            pool.prebuilds[range].iter().map(|id| format!("'{id}'")).collect();
        quoted.join(", ")
    };
    conn.batch_execute(&format!(
        "UPDATE workspace_agents SET lifecycle_state = 'starting'
          WHERE build_id IN (SELECT id FROM workspace_builds WHERE workspace_id IN ({}));
         UPDATE provisioner_jobs SET status = 'running', completed_at = NULL
          WHERE id IN (SELECT job_id FROM workspace_builds WHERE workspace_id IN ({}))",
        ids(0..33),
        ids(33..66)
    ))
    .await
    .expect("the oldest 33 not ready, the next 33 still building");
    let outcome = claim(&db, &request(&pool, alice, "dev")).await.expect("claim");
    assert!(outcome.claimed);
    assert_eq!(outcome.workspace.id, pool.prebuilds[66], "the oldest one that can be claimed");
}

/// Claims take prebuilds in the order of their workspace's creation, which the index of
/// claimable prebuilds copies: rewriting a workspace's creation instant moves it in that
/// order too, even from a later page to the first.
#[tokio::test]
async fn a_rewritten_creation_instant_moves_a_prebuild_in_the_claim_order() {
    let db = TestDatabase::new().await;
    let pool = pool_of(&db, 34).await;
    let mut conn = db.conn().await;
    let alice = seed::user(&mut conn, "alice").await;
    let newest = pool.prebuilds[33];
    diesel::update(workspaces::table.find(newest))
        .set(workspaces::created_at.eq(Utc::now() - TimeDelta::hours(2)))
        .execute(&mut conn)
        .await
        .expect("make the newest the oldest");
    let outcome = claim(&db, &request(&pool, alice, "dev")).await.expect("claim");
    assert_eq!(outcome.workspace.id, newest, "now the oldest");
}
