//! Claims handed over in batches (`ClaimBatcher`, the API's way in) against a real
//! PostgreSQL: concurrent claims of several presets share batches and get exactly what the
//! one-by-one path would give them; a batch that fails before its commit leaves its requests
//! to that path; a batch whose commit fails says so.

use poolkeeper_tests::seed;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use diesel_async::SimpleAsyncConnection;
use futures_util::future::join_all;
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::db::PREBUILDS_USER_ID;
use poolkeeper::store::claim::{ClaimBatcher, ClaimError, ClaimOutcome, ClaimRequest};
use uuid::Uuid;

use crate::claim::{pool_named, request};

/// `requests` claimed at once through `claims`, in order, each capped generously.
async fn claim_together(
    claims: &ClaimBatcher,
    requests: &[ClaimRequest],
) -> Vec<Result<ClaimOutcome, ClaimError>> {
    let tasks = requests.iter().cloned().map(|request| {
        let claims = claims.clone();
        tokio::spawn(async move { claims.claim_or_create(Utc::now(), &request).await })
    });
    let done = tokio::time::timeout(Duration::from_secs(60), join_all(tasks))
        .await
        .expect("the claims end");
    done.into_iter().map(|joined| joined.expect("claim task")).collect()
}

/// Users `prefix-0`, `prefix-1`, ...
async fn users(db: &TestDatabase, prefix: &str, n: usize) -> Vec<Uuid> {
    let mut conn = db.conn().await;
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(seed::user(&mut conn, &format!("{prefix}-{i}")).await);
    }
    ids
}

#[tokio::test]
async fn concurrent_claims_share_batches_and_each_prebuild_goes_to_one_user() {
    let db = TestDatabase::new().await;
    let go = pool_named(&db, "go", 6).await;
    let rust = pool_named(&db, "rust", 4).await;
    let people = users(&db, "dev", 20).await;
    // Twelve ask for the six `go` prebuilds, eight for the four `rust` ones.
    let requests: Vec<ClaimRequest> = people
        .iter()
        .enumerate()
        .map(|(i, user)| request(if i % 5 < 3 { &go } else { &rust }, *user, "dev"))
        .collect();
    let claims = ClaimBatcher::new(db.pool().clone());
    let outcomes = claim_together(&claims, &requests).await;

    let mut handed = BTreeSet::new();
    for (request, outcome) in requests.iter().zip(&outcomes) {
        let outcome = outcome.as_ref().expect("every claim succeeds");
        assert_eq!(outcome.workspace.owner_id, request.user_id);
        if outcome.claimed {
            assert!(handed.insert(outcome.workspace.id), "a prebuild handed to two users");
            let pool = if request.preset_id == Some(go.preset_id) { &go } else { &rust };
            assert!(pool.prebuilds.contains(&outcome.workspace.id), "from the preset asked for");
            assert_eq!(outcome.build.build_number, 2);
        } else {
            assert_eq!(outcome.build.build_number, 1, "a fresh workspace");
        }
    }
    assert_eq!(handed.len(), 10, "every prebuild claimed, none twice");
    assert_eq!(claims.handed_in_batches(), 10, "all of them by batches");
    let batches = claims.batches();
    assert!((1..20).contains(&batches), "20 claims shared {batches} batches");

    // What the one-by-one path writes, for each of them: one claim build with its job, one
    // audit entry, and the prebuild no longer listed for claims.
    let mut conn = db.conn().await;
    let ids: Vec<String> = handed.iter().map(|id| format!("'{id}'")).collect();
    let ids = ids.join(",");
    let builds = seed::count(
        &mut conn,
        &format!(
            "SELECT count(*) AS n FROM workspace_builds b
             JOIN provisioner_jobs j ON j.id = b.job_id AND j.status = 'pending'
             WHERE b.workspace_id IN ({ids}) AND b.reason = 'claim' AND b.build_number = 2"
        ),
    )
    .await;
    assert_eq!(builds, 10);
    let audited = seed::count(
        &mut conn,
        &format!(
            "SELECT count(*) AS n FROM audit_log
             WHERE action = 'workspace_claim' AND resource_id IN ({ids})"
        ),
    )
    .await;
    assert_eq!(audited, 10);
    let listed = seed::count(
        &mut conn,
        &format!(
            "SELECT count(*) AS n FROM workspace_builds
             WHERE prebuild_live AND workspace_id IN ({ids})"
        ),
    )
    .await;
    assert_eq!(listed, 0);
    let left = seed::count(
        &mut conn,
        &format!("SELECT count(*) AS n FROM workspaces WHERE owner_id = '{PREBUILDS_USER_ID}'"),
    )
    .await;
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_name_repeated_within_a_batch_is_claimed_once() {
    let db = TestDatabase::new().await;
    let go = pool_named(&db, "go", 3).await;
    let alice = users(&db, "alice", 1).await[0];
    let requests = vec![request(&go, alice, "dev"), request(&go, alice, "Dev")];
    let claims = ClaimBatcher::new(db.pool().clone());
    let outcomes = claim_together(&claims, &requests).await;
    let made = outcomes.iter().filter(|o| o.as_ref().is_ok_and(|o| o.claimed)).count();
    let taken = outcomes.iter().filter(|o| matches!(o, Err(ClaimError::NameTaken(_)))).count();
    assert_eq!((made, taken), (1, 1), "{outcomes:?}");
    assert_eq!(claims.handed_in_batches(), 1);
}

/// Makes the batch's hand-over statement, and only it, fail.
const FAIL_BATCH_HAND_OVERS: &str = "
CREATE FUNCTION fail_batch_hand_over() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_query() LIKE '%hand-overs of a claim batch%' THEN
        RAISE EXCEPTION 'batch hand-over refused by the test';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER fail_batch_hand_over BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION fail_batch_hand_over();";

#[tokio::test]
async fn a_batch_that_fails_leaves_its_claims_to_the_one_by_one_path() {
    let db = TestDatabase::new().await;
    let go = pool_named(&db, "go", 3).await;
    let people = users(&db, "dev", 3).await;
    db.conn().await.batch_execute(FAIL_BATCH_HAND_OVERS).await.expect("install the fault");
    let requests: Vec<ClaimRequest> = people.iter().map(|u| request(&go, *u, "dev")).collect();
    let claims = ClaimBatcher::new(db.pool().clone());
    let outcomes = claim_together(&claims, &requests).await;

    // The batches ran and reached their hand-over (the only statement the fault refuses),
    // handed nothing, and every claim was then made one by one.
    assert!(claims.batches() >= 1);
    assert_eq!(claims.handed_in_batches(), 0);
    let handed: BTreeSet<Uuid> = outcomes
        .iter()
        .map(|o| o.as_ref().expect("claimed one by one"))
        .inspect(|o| assert!(o.claimed))
        .map(|o| o.workspace.id)
        .collect();
    assert_eq!(handed, go.prebuilds.iter().copied().collect());
}

/// Makes every commit that would record a claim fail (a deferred check, run at commit).
const FAIL_CLAIM_COMMITS: &str = "
CREATE FUNCTION fail_claim_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'claim commit refused by the test';
END $$;
CREATE CONSTRAINT TRIGGER fail_claim_commit AFTER INSERT ON audit_log
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.action = 'workspace_claim')
    EXECUTE FUNCTION fail_claim_commit();";

#[tokio::test]
async fn a_batch_whose_commit_fails_says_the_claim_may_not_have_been_made() {
    let db = TestDatabase::new().await;
    let go = pool_named(&db, "go", 1).await;
    let alice = users(&db, "alice", 1).await[0];
    db.conn().await.batch_execute(FAIL_CLAIM_COMMITS).await.expect("install the fault");
    let claims = ClaimBatcher::new(db.pool().clone());
    let outcomes = claim_together(&claims, &[request(&go, alice, "dev")]).await;

    assert!(matches!(outcomes[0], Err(ClaimError::CommitFailed(_))), "{outcomes:?}");
    // Not retried one by one (the outcome is unknown to the batch), and here nothing was
    // written: the prebuild is still the pool's.
    let mut conn = db.conn().await;
    let owned = seed::count(
        &mut conn,
        &format!(
            "SELECT count(*) AS n FROM workspaces WHERE id = '{}' AND owner_id = '{PREBUILDS_USER_ID}'",
            go.prebuilds[0]
        ),
    )
    .await;
    assert_eq!(owned, 1);
    let mine = seed::count(
        &mut conn,
        &format!("SELECT count(*) AS n FROM workspaces WHERE owner_id = '{alice}'"),
    )
    .await;
    assert_eq!(mine, 0, "no fresh workspace built either");
}

#[tokio::test]
async fn a_failed_commit_answers_only_the_claims_it_would_have_made() {
    let db = TestDatabase::new().await;
    let go = pool_named(&db, "go", 1).await;
    let people = users(&db, "dev", 2).await;
    // Only the first person's claims fail at commit.
    let fault = FAIL_CLAIM_COMMITS.replace(
        "NEW.action = 'workspace_claim'",
        &format!("NEW.action = 'workspace_claim' AND NEW.actor_id = '{}'", people[0]),
    );
    db.conn().await.batch_execute(&fault).await.expect("install the fault");
    let requests: Vec<ClaimRequest> = people.iter().map(|u| request(&go, *u, "dev")).collect();
    let claims = ClaimBatcher::new(db.pool().clone());
    let outcomes = claim_together(&claims, &requests).await;

    // One batch took both and gave the one prebuild to the first, whose commit failed. The
    // second was not part of that commit: it claims the prebuild one by one.
    assert_eq!(claims.batches(), 1);
    assert!(matches!(outcomes[0], Err(ClaimError::CommitFailed(_))), "{outcomes:?}");
    let second = outcomes[1].as_ref().expect("the second claim is made");
    assert!(second.claimed);
    assert_eq!(second.workspace.id, go.prebuilds[0]);
}

/// Whether a claim batch's hand-over is waiting for a lock.
async fn a_hand_over_waits(db: &TestDatabase) -> bool {
    let mut conn = db.conn().await;
    seed::count(
        &mut conn,
        "SELECT count(*) AS n FROM pg_stat_activity
         WHERE wait_event_type = 'Lock' AND query LIKE '%hand-overs of a claim batch%'",
    )
    .await
        > 0
}

#[tokio::test]
async fn a_batch_behind_another_on_the_same_preset_finds_prebuilds_past_its_locks() {
    let db = TestDatabase::new().await;
    let go = pool_named(&db, "go", 30).await;
    let alice = users(&db, "alice", 1).await[0];
    let bob = users(&db, "bob", 1).await[0];
    // Alice's row held: a hand-over to her waits at its foreign-key check, after its batch
    // has locked her prebuilds.
    let mut holder = db.conn().await;
    holder
        .batch_execute(&format!("BEGIN; SELECT 1 FROM users WHERE id = '{alice}' FOR UPDATE"))
        .await
        .expect("hold alice's row");
    let claims = ClaimBatcher::new(db.pool().clone());
    let hers: Vec<ClaimRequest> =
        (0..20).map(|i| request(&go, alice, &format!("hers-{i}"))).collect();
    let first = {
        let claims = claims.clone();
        tokio::spawn(async move { claim_together(&claims, &hers).await })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !a_hand_over_waits(&db).await {
        assert!(tokio::time::Instant::now() < deadline, "alice's batch never reached its lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // With the first batch holding the first 20 prebuilds, bob's batch reads far enough past
    // them to hand him two.
    let his: Vec<ClaimRequest> = (0..2).map(|i| request(&go, bob, &format!("his-{i}"))).collect();
    let outcomes = claim_together(&claims, &his).await;
    for outcome in &outcomes {
        assert!(outcome.as_ref().expect("bob's claims are made").claimed);
    }
    assert_eq!(claims.batches(), 2, "one batch each");
    assert_eq!(claims.handed_in_batches(), 2, "bob's two by his batch, while alice's waits");

    holder.batch_execute("COMMIT").await.expect("release alice's row");
    let outcomes = first.await.expect("alice's claims");
    assert!(outcomes.iter().all(|o| o.as_ref().is_ok_and(|o| o.claimed)), "{outcomes:?}");
    assert_eq!(claims.handed_in_batches(), 22);
}
