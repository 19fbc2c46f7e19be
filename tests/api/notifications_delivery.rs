//! Notification delivery against a real PostgreSQL and real receivers on loopback: an HTTP
//! server that verifies the webhook's signature and idempotency key and answers 500, 200 or
//! not at all, and an SMTP server speaking the protocol. Every fault test counts that the
//! fault happened (a 500 answered, a request left hanging, a dispatcher killed mid-lease)
//! before it asserts the outcome.

use crate::api_server;
use poolkeeper_tests::cli;
use poolkeeper_tests::seed;
use poolkeeper_tests::smtp_server;
use poolkeeper_tests::webhook_receiver;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use poolkeeper::db::enums::{AttemptOutcome, DeliveryMethod, DeliveryStatus, Transition};
use poolkeeper::db::models::NewNotification;
use poolkeeper::db::pool::{self, PoolConfig};
use poolkeeper::db::schema::{notifications, users, workspaces};
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::notify::{
    DispatchConfig, Dispatcher, Notifier, Smtp, SmtpConfig, Webhook, WebhookConfig,
};
use poolkeeper::store::delivery::{
    attempts_of, delivery_states, set_preferences, Attempt, DeliveryState,
};
use poolkeeper::store::notifications::Kind;
use poolkeeper::telemetry::metrics::Metrics;
use smtp_server::SmtpServer;
use uuid::Uuid;
use webhook_receiver::{Receiver, Reply};

const SECRET: &str = "webhook-secret";

fn webhook(url: &str, timeout: Duration) -> Arc<dyn Notifier> {
    let config =
        WebhookConfig { url: url.parse().expect("url"), secret: SECRET.to_owned(), timeout };
    Arc::new(Webhook::new(config).expect("webhook"))
}

fn smtp(server: &SmtpServer) -> Arc<dyn Notifier> {
    let config = SmtpConfig {
        url: format!("smtp://mailer:hunter2@{}", server.addr),
        from: "Poolkeeper <poolkeeper@example.com>".parse().expect("from"),
        timeout: Duration::from_secs(10),
        ca_pem: None,
    };
    Arc::new(Smtp::new(config).expect("smtp"))
}

/// Retries come due at once (1 ms), so a test drives attempts by passes, not by sleeping.
fn config(max_attempts: u32) -> DispatchConfig {
    DispatchConfig {
        lease: Duration::from_secs(30),
        interval: Duration::from_millis(50),
        batch: 20,
        concurrency: 8,
        max_attempts,
        retry_delay: Duration::from_millis(1),
        max_retry_delay: Duration::from_millis(1),
        retention: None,
    }
}

async fn user_with_email(db: &TestDatabase, name: &str, email: &str) -> Uuid {
    let mut conn = db.conn().await;
    let id = seed::user(&mut conn, name).await;
    diesel::update(users::table.find(id))
        .set(users::email.eq(email))
        .execute(&mut conn)
        .await
        .expect("set email");
    id
}

/// Queues a notification as the loops do (a unique dedupe key), created `age` ago.
async fn enqueue(
    db: &TestDatabase,
    user_id: Uuid,
    kind: Kind,
    payload: serde_json::Value,
    age: TimeDelta,
) -> Uuid {
    let id = Uuid::new_v4();
    let row = NewNotification {
        id,
        user_id,
        kind: kind.as_str().to_owned(),
        dedupe_key: format!("{}:{user_id}:{id}", kind.as_str()),
        payload,
        created_at: Some(Utc::now() - age),
    };
    let mut conn = db.conn().await;
    diesel::insert_into(notifications::table)
        .values(row)
        .execute(&mut conn)
        .await
        .expect("enqueue");
    diesel::update(notifications::table.find(id))
        .set(notifications::next_attempt_at.eq(Utc::now() - age))
        .execute(&mut conn)
        .await
        .expect("due");
    id
}

async fn state(db: &TestDatabase, id: Uuid) -> DeliveryState {
    delivery_states(db.pool(), &[id]).await.expect("state").pop().expect("the message")
}

async fn attempts(db: &TestDatabase, id: Uuid) -> Vec<Attempt> {
    attempts_of(db.pool(), &[id]).await.expect("attempts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_is_signed_retried_after_a_500_and_names_what_it_is_about() {
    let db = TestDatabase::new().await;
    let receiver = Receiver::start(SECRET, &[Reply::Status(500), Reply::Status(200)]).await;
    let alice = user_with_email(&db, "alice", "alice@example.com").await;
    let (workspace_id, workspace_name) = {
        let mut conn = db.conn().await;
        let (template_id, version_id) = seed::template(&mut conn, "go").await;
        let seed = seed::WorkspaceSeed::owned(
            alice,
            template_id,
            version_id,
            Transition::Stop,
            Utc::now(),
        );
        let id = seed::workspace(&mut conn, seed).await;
        let name: String = workspaces::table
            .find(id)
            .select(workspaces::name)
            .first(&mut conn)
            .await
            .expect("name");
        (id, name)
    };
    let payload =
        serde_json::json!({ "workspace_id": workspace_id, "deleting_at": "2027-01-02T03:04:05Z" });
    let id = enqueue(&db, alice, Kind::WorkspaceDormant, payload, TimeDelta::zero()).await;
    let metrics = Arc::new(Metrics::new());
    let dispatcher = Dispatcher::new(
        db.pool().clone(),
        vec![webhook(&receiver.url(), Duration::from_secs(10))],
        config(5),
    )
    .with_metrics(metrics.clone());

    let first = dispatcher.dispatch_once().await.expect("first pass");
    assert_eq!((first.leased, first.temporary_failures), (1, 1), "{first:?}");
    let after_500 = state(&db, id).await;
    assert_eq!(after_500.status, DeliveryStatus::TemporaryFailure);
    assert_eq!(after_500.leased_by, None, "the lease is given back with the outcome");
    let second = dispatcher.dispatch_once().await.expect("second pass");
    assert_eq!((second.leased, second.sent), (1, 1), "{second:?}");

    let received = receiver.received();
    assert_eq!(received.len(), 2, "one 500, then one 200");
    assert_eq!(received[0].reply, Reply::Status(500), "the fault was reached");
    for request in &received {
        assert!(request.signature_valid, "signature: {request:?}");
        assert_eq!(request.idempotency_key.as_deref(), Some(id.to_string().as_str()));
        assert_eq!(request.event.as_deref(), Some("workspace_dormant"));
    }
    let body = &received[1].body;
    assert_eq!(body["id"], id.to_string());
    assert_eq!(body["kind"], "workspace_dormant");
    assert_eq!(body["workspace_id"], workspace_id.to_string());
    assert_eq!(body["user"]["username"], "alice");
    assert_eq!(body["user"]["email"], "alice@example.com");
    assert_eq!(body["title"], format!("Workspace {workspace_name} is dormant"));
    assert!(body["body"].as_str().expect("body").contains("Deletion date: 2027-01-02 03:04 UTC"));
    assert_eq!(body["labels"]["template"], "go");

    let done = state(&db, id).await;
    assert_eq!((done.status, done.attempts), (DeliveryStatus::Sent, 2));
    assert!(done.sent_at.is_some());
    let attempts = attempts(&db, id).await;
    let summary: Vec<_> = attempts.iter().map(|a| (a.attempt, a.method, a.outcome)).collect();
    assert_eq!(
        summary,
        [
            (1, DeliveryMethod::Webhook, AttemptOutcome::TemporaryFailure),
            (2, DeliveryMethod::Webhook, AttemptOutcome::Sent)
        ]
    );
    assert!(attempts[0].error.as_deref().is_some_and(|e| e.contains("500")), "{attempts:?}");
    let scraped = metrics.encode();
    for line in [
        "poolkeeper_notifications_sent_total{method=\"webhook\",kind=\"workspace_dormant\"} 1",
        "poolkeeper_notifications_failed_total{method=\"webhook\",kind=\"workspace_dormant\",outcome=\"temporary_failure\"} 1",
        "poolkeeper_notifications_dispatch_duration_seconds_count 2",
    ] {
        assert!(scraped.contains(line), "{line} missing from:\n{scraped}");
    }
    println!("webhook retry: 2 requests (1 answered 500), signatures valid, delivered once, violations: 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_times_out_as_a_temporary_failure() {
    let db = TestDatabase::new().await;
    let receiver = Receiver::start(SECRET, &[Reply::Hang]).await;
    let bob = user_with_email(&db, "bob", "").await;
    let id =
        enqueue(&db, bob, Kind::WorkspaceAutoupdated, serde_json::json!({}), TimeDelta::zero())
            .await;
    let dispatcher = Dispatcher::new(
        db.pool().clone(),
        vec![webhook(&receiver.url(), Duration::from_millis(500))],
        config(5),
    );
    let started = Instant::now();
    let pass = dispatcher.dispatch_once().await.expect("pass");
    let took = started.elapsed();
    assert_eq!(receiver.hung(), 1, "the request reached the hanging receiver");
    assert_eq!(pass.temporary_failures, 1, "{pass:?}");
    assert!(took < Duration::from_secs(5), "the timeout cut the request off: {took:?}");
    let state = state(&db, id).await;
    assert_eq!(state.status, DeliveryStatus::TemporaryFailure);
    let attempts = attempts(&db, id).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, AttemptOutcome::TemporaryFailure);
    assert!(attempts[0].error.as_deref().is_some_and(|e| e.contains("timed out")), "{attempts:?}");
    println!("webhook timeout: 1 request hung, cut off after {took:?}, recorded temporary_failure, violations: 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_after_max_attempts_and_at_once_on_a_final_4xx() {
    let db = TestDatabase::new().await;
    let failing = Receiver::start(SECRET, &[Reply::Status(503)]).await;
    let gone = Receiver::start(SECRET, &[Reply::Status(410)]).await;
    let carol = user_with_email(&db, "carol", "").await;

    let id = enqueue(&db, carol, Kind::PresetHardLimited, serde_json::json!({}), TimeDelta::zero())
        .await;
    let dispatcher = Dispatcher::new(
        db.pool().clone(),
        vec![webhook(&failing.url(), Duration::from_secs(10))],
        config(3),
    );
    for _ in 0..10 {
        dispatcher.dispatch_once().await.expect("pass");
    }
    assert_eq!(failing.received().len(), 3, "three attempts, then no more");
    let s = state(&db, id).await;
    assert_eq!((s.status, s.attempts), (DeliveryStatus::PermanentFailure, 3));
    let outcomes: Vec<_> = attempts(&db, id).await.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [
            AttemptOutcome::TemporaryFailure,
            AttemptOutcome::TemporaryFailure,
            AttemptOutcome::TemporaryFailure
        ]
    );

    let id = enqueue(&db, carol, Kind::PresetHardLimited, serde_json::json!({}), TimeDelta::zero())
        .await;
    let dispatcher = Dispatcher::new(
        db.pool().clone(),
        vec![webhook(&gone.url(), Duration::from_secs(10))],
        config(3),
    );
    for _ in 0..3 {
        dispatcher.dispatch_once().await.expect("pass");
    }
    assert_eq!(gone.received().len(), 1, "a 410 is final: one attempt");
    let s = state(&db, id).await;
    assert_eq!((s.status, s.attempts), (DeliveryStatus::PermanentFailure, 1));
    println!(
        "permanent failure: 3 attempts answered 503 then given up; 1 answered 410, violations: 0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_deliver_each_message_exactly_once() {
    let db = TestDatabase::new().await;
    let receiver = Receiver::start(SECRET, &[Reply::Status(200)]).await;
    receiver.set_delay(Duration::from_millis(20));
    let dave = user_with_email(&db, "dave", "").await;
    let mut ids = Vec::new();
    for _ in 0..60 {
        ids.push(
            enqueue(
                &db,
                dave,
                Kind::WorkspaceAutoupdated,
                serde_json::json!({}),
                TimeDelta::zero(),
            )
            .await,
        );
    }
    let small = DispatchConfig { batch: 4, concurrency: 4, ..config(5) };
    let other_pool = pool::build(db.url(), &PoolConfig::default()).expect("second pool");
    let a = Dispatcher::new(
        db.pool().clone(),
        vec![webhook(&receiver.url(), Duration::from_secs(10))],
        small.clone(),
    );
    let b =
        Dispatcher::new(other_pool, vec![webhook(&receiver.url(), Duration::from_secs(10))], small);
    let (from_a, from_b) = tokio::join!(a.drain(), b.drain());
    let (from_a, from_b) = (from_a.expect("a"), from_b.expect("b"));
    assert!(
        from_a.leased > 0 && from_b.leased > 0,
        "both dispatchers worked: {from_a:?} {from_b:?}"
    );
    assert_eq!(from_a.leased + from_b.leased, 60, "{from_a:?} {from_b:?}");

    let received = receiver.received();
    let mut keys: Vec<_> = received.iter().filter_map(|r| r.idempotency_key.clone()).collect();
    keys.sort();
    let total = keys.len();
    keys.dedup();
    assert_eq!((total, keys.len()), (60, 60), "each message exactly once at the receiver");
    let states = delivery_states(db.pool(), &ids).await.expect("states");
    assert!(
        states.iter().all(|s| s.status == DeliveryStatus::Sent && s.attempts == 1),
        "{states:?}"
    );
    println!(
        "two dispatchers: {} + {} leased, 60 requests for 60 messages, violations: 0",
        from_a.leased, from_b.leased
    );
}

/// A row another dispatcher is leasing right now (its lease statement holds the row lock)
/// is skipped, not waited for and not leased twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_being_leased_elsewhere_is_skipped_not_waited_for() {
    use diesel_async::SimpleAsyncConnection;
    let db = TestDatabase::new().await;
    let kim = user_with_email(&db, "kim", "").await;
    let locked =
        enqueue(&db, kim, Kind::WorkspaceDormant, serde_json::json!({}), TimeDelta::zero()).await;
    let free =
        enqueue(&db, kim, Kind::WorkspaceDormant, serde_json::json!({}), TimeDelta::zero()).await;
    let mut holder =
        pool::build(db.url(), &PoolConfig::default()).expect("pool").get().await.expect("conn");
    holder.batch_execute("BEGIN").await.expect("begin");
    let held: Vec<Uuid> = notifications::table
        .find(locked)
        .select(notifications::id)
        .for_update()
        .load(&mut *holder)
        .await
        .expect("lock");
    assert_eq!(held, [locked], "the row is locked by the other transaction");
    let leased = tokio::time::timeout(
        Duration::from_secs(5),
        poolkeeper::store::delivery::lease(db.pool(), "b", Duration::from_secs(30), 10),
    )
    .await
    .expect("the lease did not wait for the locked row")
    .expect("lease");
    let ids: Vec<_> = leased.iter().map(|m| m.id).collect();
    assert_eq!(ids, [free], "only the unlocked row");
    holder.batch_execute("COMMIT").await.expect("commit");
    let later = poolkeeper::store::delivery::lease(db.pool(), "b", Duration::from_secs(30), 10)
        .await
        .expect("lease");
    let ids: Vec<_> = later.iter().map(|m| m.id).collect();
    assert_eq!(ids, [locked], "the other row once its lock is gone; the leased one not again");
    println!("skip locked: 1 locked row skipped, 1 leased, none twice, violations: 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_that_dies_mid_lease_is_replaced_once_the_lease_expires() {
    let db = TestDatabase::new().await;
    let receiver = Receiver::start(SECRET, &[Reply::Hang, Reply::Status(200)]).await;
    let erin = user_with_email(&db, "erin", "").await;
    let id =
        enqueue(&db, erin, Kind::WorkspaceAutodeleted, serde_json::json!({}), TimeDelta::zero())
            .await;
    let lease = Duration::from_secs(2);
    let short = DispatchConfig { lease, ..config(5) };
    let doomed = Dispatcher::new(
        db.pool().clone(),
        vec![webhook(&receiver.url(), Duration::from_secs(30))],
        short.clone(),
    );
    let doomed_id = doomed.id().to_owned();
    let task = tokio::spawn(async move { doomed.dispatch_once().await });
    receiver.wait_for(1).await;
    let leased_at = Instant::now();
    task.abort();
    assert!(task.await.is_err_and(|e| e.is_cancelled()), "the dispatcher died mid-send");
    let held = state(&db, id).await;
    assert_eq!(held.leased_by.as_deref(), Some(doomed_id.as_str()), "the dead one's lease stays");

    let other_pool = pool::build(db.url(), &PoolConfig::default()).expect("second pool");
    let heir =
        Dispatcher::new(other_pool, vec![webhook(&receiver.url(), Duration::from_secs(10))], short);
    let early = heir.dispatch_once().await.expect("early pass");
    assert_eq!(early.leased, 0, "the lease is respected while it lasts");
    let mut delivered = None;
    for _ in 0..200 {
        let pass = heir.dispatch_once().await.expect("pass");
        if pass.leased > 0 {
            delivered = Some(pass);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waited = leased_at.elapsed();
    let pass = delivered.expect("the heir delivered after the lease expired");
    assert_eq!(pass.sent, 1, "{pass:?}");
    assert!(
        waited >= lease - Duration::from_millis(500),
        "not before the lease ran out: {waited:?}"
    );
    assert_eq!(receiver.hung(), 1, "the first send was cut off by the kill");
    assert_eq!(receiver.received().len(), 2);
    let s = state(&db, id).await;
    assert_eq!((s.status, s.attempts, s.leased_by), (DeliveryStatus::Sent, 2, None));
    let summary: Vec<_> = attempts(&db, id).await.iter().map(|a| (a.attempt, a.outcome)).collect();
    assert_eq!(summary, [(2, AttemptOutcome::Sent)], "the dead dispatcher recorded nothing");
    println!("dispatcher killed mid-lease: 1 send hung, taken over after {waited:?}, delivered once, violations: 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_switched_off_is_inhibited_and_others_still_arrive() {
    let db = TestDatabase::new().await;
    let receiver = Receiver::start(SECRET, &[Reply::Status(200)]).await;
    let frank = user_with_email(&db, "frank", "").await;
    let grace = user_with_email(&db, "grace", "").await;
    set_preferences(db.pool(), frank, &[(Kind::PresetHardLimited, false)], Utc::now())
        .await
        .expect("pref");
    let muted =
        enqueue(&db, frank, Kind::PresetHardLimited, serde_json::json!({}), TimeDelta::zero())
            .await;
    let other_kind =
        enqueue(&db, frank, Kind::WorkspaceDormant, serde_json::json!({}), TimeDelta::zero()).await;
    let other_user =
        enqueue(&db, grace, Kind::PresetHardLimited, serde_json::json!({}), TimeDelta::zero())
            .await;
    let dispatcher = Dispatcher::new(
        db.pool().clone(),
        vec![webhook(&receiver.url(), Duration::from_secs(10))],
        config(5),
    );
    let pass = dispatcher.dispatch_once().await.expect("pass");
    assert_eq!((pass.sent, pass.inhibited), (2, 1), "{pass:?}");
    assert_eq!(state(&db, muted).await.status, DeliveryStatus::Inhibited);
    assert_eq!(state(&db, other_kind).await.status, DeliveryStatus::Sent);
    assert_eq!(state(&db, other_user).await.status, DeliveryStatus::Sent);
    let received: Vec<_> =
        receiver.received().iter().filter_map(|r| r.idempotency_key.clone()).collect();
    assert_eq!(received.len(), 2);
    assert!(!received.contains(&muted.to_string()), "the muted message never left");
    let outcomes: Vec<_> = attempts(&db, muted).await.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [AttemptOutcome::Inhibited]);
    println!("preferences: 1 inhibited, 2 delivered, violations: 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_finished_messages_in_batches_and_keeps_the_rest() {
    let db = TestDatabase::new().await;
    let hank = user_with_email(&db, "hank", "").await;
    let old = TimeDelta::days(40);
    let pending_old = enqueue(&db, hank, Kind::WorkspaceDormant, serde_json::json!({}), old).await;
    let sent_new =
        enqueue(&db, hank, Kind::WorkspaceDormant, serde_json::json!({}), TimeDelta::days(1)).await;
    let mut conn = db.conn().await;
    diesel::update(notifications::table.find(sent_new))
        .set(notifications::status.eq(DeliveryStatus::Sent))
        .execute(&mut conn)
        .await
        .expect("sent");
    // 2,500 old finished messages: more than two batches of the pruner.
    diesel::sql_query(
        "INSERT INTO notifications (user_id, kind, dedupe_key, created_at, status)
         SELECT $1, 'workspace_dormant', 'old:' || g, now() - interval '40 days',
                (ARRAY['sent', 'permanent_failure', 'inhibited'])[1 + g % 3]
         FROM generate_series(1, 2500) g",
    )
    .bind::<diesel::sql_types::Uuid, _>(hank)
    .execute(&mut conn)
    .await
    .expect("old rows");
    let dispatcher = Dispatcher::new(
        db.pool().clone(),
        vec![webhook("http://127.0.0.1:9/unused", Duration::from_secs(1))],
        DispatchConfig { retention: Some(Duration::from_secs(30 * 86_400)), ..config(5) },
    );
    let deleted = dispatcher.prune().await.expect("prune");
    assert_eq!(deleted, 2500);
    let left = seed::count(&mut conn, "SELECT count(*) AS n FROM notifications").await;
    assert_eq!(left, 2, "the old pending one and the recent sent one stay");
    let kept = delivery_states(db.pool(), &[pending_old, sent_new]).await.expect("kept");
    assert_eq!(kept.len(), 2);
    println!("retention: 2500 finished rows older than 30 days deleted, 2 kept, violations: 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_sends_plain_text_and_html_to_the_users_address() {
    let db = TestDatabase::new().await;
    let server = SmtpServer::start().await;
    let ivy = user_with_email(&db, "ivy", "ivy@example.com").await;
    let id = enqueue(
        &db,
        ivy,
        Kind::PrebuildResourcesReplaced,
        serde_json::json!({ "resources": ["docker_volume.home", "random_id.x"] }),
        TimeDelta::zero(),
    )
    .await;
    let dispatcher = Dispatcher::new(db.pool().clone(), vec![smtp(&server)], config(5));
    let pass = dispatcher.dispatch_once().await.expect("pass");
    assert_eq!(pass.sent, 1, "{pass:?}");
    let mails = server.mails();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    // base64("\0mailer\0hunter2")
    assert_eq!(mail.auth.as_deref(), Some("AG1haWxlcgBodW50ZXIy"));
    assert_eq!(mail.from, "poolkeeper@example.com");
    assert_eq!(mail.to, ["ivy@example.com"]);
    // Quoted-printable soft line breaks joined, so that phrases can be looked for.
    let data = &mail.data.replace("=\r\n", "");
    assert!(data.contains("To: ivy <ivy@example.com>"), "{data}");
    assert!(data.contains("Subject: Claiming a prebuild of preset"), "{data}");
    assert!(data.contains("multipart/alternative"), "{data}");
    assert!(data.contains("Content-Type: text/plain; charset=utf-8"), "{data}");
    assert!(data.contains("Content-Type: text/html; charset=utf-8"), "{data}");
    assert!(data.contains("docker_volume.home, random_id.x"), "{data}");
    assert!(data.contains(&format!("Message-ID: <{id}@poolkeeper>")), "{data}");
    assert_eq!(state(&db, id).await.status, DeliveryStatus::Sent);
    println!("smtp: 1 message, plain and HTML parts, to the user's address, violations: 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_retries_a_4xx_gives_up_on_a_5xx_and_skips_users_without_an_address() {
    let db = TestDatabase::new().await;
    let server = SmtpServer::start().await;
    let jo = user_with_email(&db, "jo", "jo@example.com").await;
    let nomail = user_with_email(&db, "nomail", "").await;
    server.refuse_rcpt(&["451 4.3.0 try again later"]);
    let retried =
        enqueue(&db, jo, Kind::WorkspaceDormant, serde_json::json!({}), TimeDelta::zero()).await;
    let dispatcher = Dispatcher::new(db.pool().clone(), vec![smtp(&server)], config(5));
    let first = dispatcher.dispatch_once().await.expect("first");
    assert_eq!((first.temporary_failures, server.refused()), (1, 1), "the 451 was answered");
    let second = dispatcher.dispatch_once().await.expect("second");
    assert_eq!(second.sent, 1);
    assert_eq!(server.mails().len(), 1);

    server.refuse_rcpt(&["550 5.1.1 no such user"]);
    let refused =
        enqueue(&db, jo, Kind::WorkspaceDormant, serde_json::json!({}), TimeDelta::zero()).await;
    let unreachable =
        enqueue(&db, nomail, Kind::WorkspaceDormant, serde_json::json!({}), TimeDelta::zero())
            .await;
    let third = dispatcher.dispatch_once().await.expect("third");
    assert_eq!(third.permanent_failures, 2, "{third:?}");
    assert_eq!(server.refused(), 2, "the 550 was answered");
    assert_eq!(state(&db, retried).await.status, DeliveryStatus::Sent);
    assert_eq!(state(&db, refused).await.status, DeliveryStatus::PermanentFailure);
    let no_address = attempts(&db, unreachable).await;
    assert_eq!(no_address.len(), 1);
    assert_eq!(no_address[0].outcome, AttemptOutcome::PermanentFailure);
    assert!(no_address[0].error.as_deref().is_some_and(|e| e.contains("no e-mail address")));
    assert_eq!(server.mails().len(), 1, "nothing more was accepted");
    println!("smtp faults: 451 retried, 550 final, no address never sent, violations: 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_sets_preferences_sends_a_test_and_dispatches() {
    use std::process::ExitCode;
    let db = TestDatabase::new().await;
    let receiver = Receiver::start(SECRET, &[Reply::Status(200)]).await;
    let server = SmtpServer::start().await;
    let lee = user_with_email(&db, "lee", "").await;
    let url = db.url().to_owned();
    let hook = receiver.url();
    let smtp_url = format!("smtp://mailer:hunter2@{}", server.addr);
    let methods = [
        "--notifications-webhook-url",
        hook.as_str(),
        "--notifications-webhook-secret",
        SECRET,
        "--notifications-smtp-url",
        smtp_url.as_str(),
        "--notifications-smtp-from",
        "poolkeeper@example.com",
    ];
    let run = |args: Vec<&str>| {
        let mut all = args;
        all.extend(["--database-url", url.as_str()]);
        cli::poolkeeper(&all)
    };
    let email = ["notifications", "preferences", "email", "--user", "lee", "--email"];
    let bad = [&["poolkeeper"][..], &email[..], &["not an address"]].concat();
    let refused = <poolkeeper::cli::Cli as clap::Parser>::try_parse_from(bad)
        .expect_err("a bad address is refused");
    assert!(refused.to_string().contains("--email"), "{refused}");
    assert_eq!(run([&email[..], &["lee@example.com"]].concat()), ExitCode::SUCCESS);
    let nobody = ["notifications", "preferences", "list", "--user", "nobody"];
    assert_eq!(run(nobody.to_vec()), ExitCode::from(2), "an unknown user is refused");
    let off = [
        "notifications",
        "preferences",
        "set",
        "--user",
        "lee",
        "--kind",
        "preset_hard_limited",
        "--enabled",
        "false",
    ];
    assert_eq!(run(off.to_vec()), ExitCode::SUCCESS);
    let prefs = poolkeeper::store::delivery::preferences(db.pool(), lee).await.expect("prefs");
    let muted: Vec<_> = prefs.iter().filter(|p| !p.enabled).map(|p| p.kind).collect();
    assert_eq!(muted, [Kind::PresetHardLimited]);

    let test = [&["notifications", "test", "--user", "lee"][..], &methods[..]].concat();
    assert_eq!(run(test), ExitCode::SUCCESS);
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body["kind"], "test");
    assert!(received[0].signature_valid);
    let mails = server.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, ["lee@example.com"]);

    let id =
        enqueue(&db, lee, Kind::WorkspaceDormant, serde_json::json!({}), TimeDelta::zero()).await;
    let dispatch = [&["notifications", "dispatch", "--once"][..], &methods[..]].concat();
    assert_eq!(run(dispatch), ExitCode::SUCCESS);
    let done = state(&db, id).await;
    assert_eq!(done.status, DeliveryStatus::Sent);
    let methods_used: Vec<_> = attempts(&db, id).await.iter().map(|a| a.method).collect();
    assert_eq!(methods_used, [DeliveryMethod::Smtp, DeliveryMethod::Webhook]);
    assert_eq!((receiver.received().len(), server.mails().len()), (2, 2));
    assert_eq!(run(vec!["notifications", "list", "--json"]), ExitCode::SUCCESS);

    let no_secret =
        vec!["notifications", "dispatch", "--once", "--notifications-webhook-url", hook.as_str()];
    assert_eq!(run(no_secret), ExitCode::from(2), "a webhook without a secret is refused");
    let short_lease = vec![
        "notifications",
        "dispatch",
        "--once",
        "--notifications-webhook-url",
        hook.as_str(),
        "--notifications-webhook-secret",
        SECRET,
        "--notifications-lease",
        "5s",
    ];
    assert_eq!(run(short_lease), ExitCode::from(2), "a lease shorter than the timeout is refused");
    println!(
        "cli: email, preferences, test by both methods, dispatch --once, refusals, violations: 0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferences_over_http_are_the_callers_own_and_name_a_bad_kind() {
    use poolkeeper::db::enums::UserRole;
    use reqwest::{Method, StatusCode};
    let api = api_server::TestApi::start().await;
    let (mia, mia_token) = api.user("mia", UserRole::Member).await;
    let (_, otto_token) = api.user("otto", UserRole::TemplateAdmin).await;
    let path = "/api/v1/users/me/notification-preferences";
    let (status, body) = api.call(Method::GET, path, &mia_token, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["preferences"].as_object().map(|o| o.len()), Some(Kind::ALL.len()));
    assert!(body["preferences"].as_object().expect("map").values().all(|v| v == true));

    let off = serde_json::json!({"preferences": {"workspace_dormant": false}});
    let (status, body) = api.call(Method::PUT, path, &mia_token, Some(off)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["preferences"]["workspace_dormant"], false);
    assert_eq!(body["preferences"]["workspace_autodeleted"], true);
    let (_, others) = api.call(Method::GET, path, &otto_token, None).await;
    assert_eq!(others["preferences"]["workspace_dormant"], true, "only the caller's own");

    let bad = serde_json::json!({"preferences": {"workspace_dormant": true, "bogus": false}});
    let (status, body) = api.call(Method::PUT, path, &mia_token, Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "preferences.bogus");
    let prefs = poolkeeper::store::delivery::preferences(api.db.pool(), mia).await.expect("prefs");
    assert!(
        prefs.iter().any(|p| p.kind == Kind::WorkspaceDormant && !p.enabled),
        "a refused body changes nothing"
    );
    let wrong_type = serde_json::json!({"preferences": {"workspace_dormant": "no"}});
    let (status, body) = api.call(Method::PUT, path, &mia_token, Some(wrong_type)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

/// The lease query reads the due rows through the partial index, however many delivered
/// rows the outbox keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_query_uses_the_due_index() {
    #[derive(diesel::QueryableByName)]
    struct Plan {
        #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
        line: String,
    }
    let db = TestDatabase::new().await;
    let mia = user_with_email(&db, "mia", "").await;
    let mut conn = db.conn().await;
    diesel::sql_query(
        "INSERT INTO notifications (user_id, kind, dedupe_key, status, created_at)
         SELECT $1, 'workspace_dormant', 'done:' || g, 'sent', now() - interval '1 day'
         FROM generate_series(1, 20000) g",
    )
    .bind::<diesel::sql_types::Uuid, _>(mia)
    .execute(&mut conn)
    .await
    .expect("delivered rows");
    for _ in 0..5 {
        enqueue(&db, mia, Kind::WorkspaceDormant, serde_json::json!({}), TimeDelta::zero()).await;
    }
    diesel::sql_query("ANALYZE notifications").execute(&mut conn).await.expect("analyze");
    let plan: Vec<Plan> =
        diesel::sql_query(format!("EXPLAIN {}", poolkeeper::store::delivery::LEASE_SQL))
            .bind::<diesel::sql_types::Text, _>("d") // $1 dispatcher
            .bind::<diesel::sql_types::Double, _>(30.0) // $2 lease seconds
            .bind::<diesel::sql_types::BigInt, _>(20i64) // $3 batch size
            .load(&mut conn)
            .await
            .expect("explain");
    let plan: Vec<_> = plan.into_iter().map(|p| p.line).collect();
    assert!(
        plan.iter().any(|line| line.contains("notifications_due_idx")),
        "the due index is not used:\n{}",
        plan.join("\n")
    );
}

/// A CA and a server certificate for 127.0.0.1 it signed.
fn smtp_certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "poolkeeper smtp test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("sign CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("server params");
    let cert = params.signed_by(&key, &issuer).expect("sign server");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_over_implicit_tls_trusts_the_configured_ca_and_nothing_else() {
    let (ca, cert, key) = smtp_certificates();
    let db = TestDatabase::new().await;
    let server = SmtpServer::start_tls(&cert, &key).await;
    let olga = user_with_email(&db, "olga", "olga@example.com").await;
    let method = |ca_pem: Option<&str>| -> Arc<dyn Notifier> {
        let config = SmtpConfig {
            url: format!("smtps://mailer:hunter2@127.0.0.1:{}", server.addr.port()),
            from: "poolkeeper@example.com".parse().expect("from"),
            timeout: Duration::from_secs(10),
            ca_pem: ca_pem.map(|pem| pem.as_bytes().to_vec()),
        };
        Arc::new(Smtp::new(config).expect("smtp"))
    };

    let untrusted =
        enqueue(&db, olga, Kind::WorkspaceDormant, serde_json::json!({}), TimeDelta::zero()).await;
    let pass = Dispatcher::new(db.pool().clone(), vec![method(None)], config(5))
        .dispatch_once()
        .await
        .expect("pass");
    assert_eq!(pass.temporary_failures, 1, "an unknown CA is refused: {pass:?}");
    assert_eq!((server.connections(), server.tls_sessions()), (1, 0), "the handshake was tried");
    let error = attempts(&db, untrusted).await[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("certificate") || error.contains("tls") || error.contains("TLS"),
        "{error}"
    );

    let pass = Dispatcher::new(db.pool().clone(), vec![method(Some(&ca))], config(5))
        .dispatch_once()
        .await
        .expect("pass");
    assert_eq!(pass.sent, 1, "with the CA: {pass:?}");
    assert_eq!(server.tls_sessions(), 1);
    let mails = server.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].auth.as_deref(), Some("AG1haWxlcgBodW50ZXIy"));
    assert_eq!(mails[0].to, ["olga@example.com"]);

    let plain = SmtpConfig {
        url: format!("smtp://127.0.0.1:{}", server.addr.port()),
        from: "poolkeeper@example.com".parse().expect("from"),
        timeout: Duration::from_secs(10),
        ca_pem: Some(ca.into_bytes()),
    };
    let refused = Smtp::new(plain).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.starts_with("--notifications-smtp-ca-file:"), "{refused}");
    println!("smtps: unknown CA refused (1 handshake tried), configured CA trusted, 1 message, violations: 0");
}
