//! Job completion: deadlines follow the core's rules §3 rules, a delete build deletes the
//! workspace, and a worker runs a simulated job end to end (and stops a cancelled one).

use poolkeeper_tests::provisioner_seed as seed;

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use poolkeeper::db::enums::{AgentLifecycle, JobStatus, Transition};
use poolkeeper::db::models::{WorkspaceAgent, WorkspaceBuild};
use poolkeeper::db::schema::{provisioner_jobs, workspace_agents, workspace_builds, workspaces};
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::db::PREBUILDS_USER_ID;
use poolkeeper::provisioner::backend::{AgentSpec, BuildOutput};
use poolkeeper::provisioner::{
    acquire_next_job, complete_job, complete_taken_job, end_taken_job, flip_due_agents, run_worker,
    AsTaken, Backends, CancellationToken, Completion, JobResult, NextJob, SimulatedConfig,
    WorkerConfig,
};
use poolkeeper::store::jobs::{job_context, JobContext};
use poolkeeper_core::schedule::{compute_deadlines, DayName, DeadlineInputs, WeekdaySet};
use seed::TemplateSpec;
use uuid::Uuid;

/// Cap of the condition waits: generous, a slow machine must not fail them.
const WAIT_CAP: Duration = Duration::from_secs(60);

/// Monday 2025-06-02 09:00 UTC.
fn monday_nine() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 2, 9, 0, 0).single().expect("valid instant")
}

use poolkeeper_tests::seed::t;

async fn build_row(conn: &mut AsyncPgConnection, id: Uuid) -> WorkspaceBuild {
    workspace_builds::table
        .find(id)
        .select(WorkspaceBuild::as_select())
        .get_result(conn)
        .await
        .expect("build row")
}

fn one_agent() -> JobResult {
    JobResult::Succeeded(BuildOutput {
        state: Some(b"state".to_vec()),
        agents: vec![AgentSpec { name: "main".to_owned(), start_secs: 0 }],
    })
}

/// Acquire the only pending job and complete it at `at` with `result`.
async fn run_to_completion(conn: &mut AsyncPgConnection, at: DateTime<Utc>, result: JobResult) {
    let job = acquire_next_job(conn, "w", at).await.expect("acquire").expect("a pending job");
    let completion = complete_job(conn, job.id, "w", &result, at).await.expect("complete");
    assert!(completion.is_some(), "the job was still ours");
}

#[tokio::test]
async fn start_build_with_a_ttl_gets_its_deadline() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let owner = seed::user(&mut conn, "alice", None).await;
    let (template, version) = seed::template(&mut conn, "dev", TemplateSpec::default()).await;
    let ws =
        seed::workspace(&mut conn, owner, template, "ws", 8 * 3600, Some("CRON_TZ=UTC 0 8 * * *"))
            .await;
    let (build, job) = seed::build(&mut conn, ws, version, owner, 1, Transition::Start, None).await;
    run_to_completion(&mut conn, monday_nine(), one_agent()).await;

    let expected = compute_deadlines(&DeadlineInputs {
        completed_at: monday_nine(),
        is_prebuild: false,
        workspace_ttl_secs: 8 * 3600,
        autostart_schedule: Some("CRON_TZ=UTC 0 8 * * *"),
        quiet_hours_schedule: Some(""),
        user_autostop_enabled: true,
        default_ttl_secs: 0,
        autostop_requirement_days: WeekdaySet::default(),
        autostop_requirement_weeks: 1,
        autostart_days: WeekdaySet::EVERY_DAY,
    })
    .expect("valid inputs");
    let row = build_row(&mut conn, build).await;
    assert_eq!(row.deadline, Some(t("2025-06-02T17:00:00Z")));
    assert_eq!((row.deadline, row.max_deadline), (expected.deadline, expected.max_deadline));
    assert_eq!(row.max_deadline, None);
    assert_eq!(row.provisioner_state.as_deref(), Some(&b"state"[..]));
    let next_start: Option<DateTime<Utc>> = workspaces::table
        .find(ws)
        .select(workspaces::next_start_at)
        .get_result(&mut conn)
        .await
        .expect("workspace");
    assert_eq!(next_start, Some(t("2025-06-03T08:00:00Z")));
    assert_eq!(next_start, expected.next_start_at);

    let job = seed::job_row(&mut conn, job).await;
    assert_eq!((job.status, job.completed_at), (JobStatus::Succeeded, Some(monday_nine())));
    let agents: Vec<WorkspaceAgent> = workspace_agents::table
        .filter(workspace_agents::build_id.eq(build))
        .select(WorkspaceAgent::as_select())
        .load(&mut conn)
        .await
        .expect("agents");
    assert_eq!(agents.len(), 1);
    assert_eq!(
        (agents[0].lifecycle_state, agents[0].ready_at),
        (AgentLifecycle::Ready, Some(monday_nine()))
    );
}

#[tokio::test]
async fn autostop_requirement_and_quiet_hours_cap_the_deadline() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    // Quiet hours 02:00 in New York (EDT, 06:00Z); required stop on Saturdays.
    let quiet = "CRON_TZ=America/New_York 0 2 * * *";
    let owner = seed::user(&mut conn, "bob", Some(quiet)).await;
    let spec = TemplateSpec {
        autostop_requirement_days: vec!["sat".to_owned()],
        ..TemplateSpec::default()
    };
    let (template, version) = seed::template(&mut conn, "dev", spec).await;
    // A 30-day TTL: the max deadline comes first and wins.
    let ws = seed::workspace(&mut conn, owner, template, "ws", 30 * 86400, None).await;
    let (build, _) = seed::build(&mut conn, ws, version, owner, 1, Transition::Start, None).await;
    run_to_completion(&mut conn, monday_nine(), one_agent()).await;

    let expected = compute_deadlines(&DeadlineInputs {
        completed_at: monday_nine(),
        is_prebuild: false,
        workspace_ttl_secs: 30 * 86400,
        autostart_schedule: None,
        quiet_hours_schedule: Some(quiet),
        user_autostop_enabled: true,
        default_ttl_secs: 0,
        autostop_requirement_days: WeekdaySet::from_days(&[DayName::Sat]),
        autostop_requirement_weeks: 1,
        autostart_days: WeekdaySet::EVERY_DAY,
    })
    .expect("valid inputs");
    let row = build_row(&mut conn, build).await;
    assert_eq!(row.max_deadline, Some(t("2025-06-07T06:00:00Z")));
    assert_eq!(row.deadline, Some(t("2025-06-07T06:00:00Z")));
    assert_eq!((row.deadline, row.max_deadline), (expected.deadline, expected.max_deadline));
}

#[tokio::test]
async fn failed_builds_keep_the_error_and_delete_builds_delete() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let owner = seed::user(&mut conn, "carol", None).await;
    let (template, version) = seed::template(&mut conn, "dev", TemplateSpec::default()).await;
    let ws = seed::workspace(&mut conn, owner, template, "ws", 3600, None).await;

    let (_, job) = seed::build(&mut conn, ws, version, owner, 1, Transition::Start, None).await;
    let failure = poolkeeper::provisioner::backend::BuildFailure {
        error: poolkeeper::provisioner::BackendError::InvalidSource("dir: missing".to_owned()),
        state: None,
    };
    run_to_completion(&mut conn, monday_nine(), JobResult::Failed(failure)).await;
    let job = seed::job_row(&mut conn, job).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert!(job.error.as_deref().is_some_and(|e| e.contains("dir: missing")), "{:?}", job.error);

    seed::build(&mut conn, ws, version, owner, 2, Transition::Delete, None).await;
    run_to_completion(&mut conn, monday_nine(), JobResult::Succeeded(BuildOutput::default())).await;
    let deleted: bool = workspaces::table
        .find(ws)
        .select(workspaces::deleted)
        .get_result(&mut conn)
        .await
        .expect("workspace");
    assert!(deleted);
}

async fn agent_state(conn: &mut AsyncPgConnection, build: Uuid) -> AgentLifecycle {
    workspace_agents::table
        .filter(workspace_agents::build_id.eq(build))
        .select(workspace_agents::lifecycle_state)
        .get_result(conn)
        .await
        .expect("one agent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_simulated_jobs_and_stops_cancelled_ones() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let owner = seed::user(&mut conn, "dana", None).await;
    let quick = TemplateSpec {
        source: serde_json::json!({"duration_ms": 10, "agent_start_secs": 1}),
        ..TemplateSpec::default()
    };
    let (template, version) = seed::template(&mut conn, "quick", quick).await;
    let slow = TemplateSpec {
        source: serde_json::json!({"duration_ms": 600_000}),
        ..TemplateSpec::default()
    };
    let (_, slow_version) = seed::template(&mut conn, "slow", slow).await;
    let ws = seed::workspace(&mut conn, owner, template, "ws", 0, None).await;

    let shutdown = CancellationToken::new();
    let config = WorkerConfig {
        tags: Default::default(),
        worker_id: "sim-worker".to_owned(),
        // NOTIFY wakes the worker at once; the poll and the heartbeat (which also reads the
        // job's status) are the fallback when a notification is lost, so the waits below are
        // conditions with generous caps, not a race against a long poll.
        poll_interval: Duration::from_secs(2),
        heartbeat_interval: Duration::from_secs(2),
        backends: Backends { simulated: SimulatedConfig::default(), ..Backends::default() },
    };
    let worker = tokio::spawn(run_worker(db.pool().clone(), config, shutdown.clone()));
    // A job seeded before the worker LISTENs is found by a poll.
    let (build, job) = seed::build(&mut conn, ws, version, owner, 1, Transition::Start, None).await;
    let done = seed::wait_for_status(&mut conn, job, &[JobStatus::Succeeded], WAIT_CAP).await;
    assert_eq!(done.worker_id.as_deref(), Some("sim-worker"));
    // The agent starts, then is ready a second later.
    let deadline = tokio::time::Instant::now() + WAIT_CAP;
    while agent_state(&mut conn, build).await != AgentLifecycle::Ready {
        assert!(tokio::time::Instant::now() < deadline, "agent never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A slow job, cancelled while it runs: NOTIFY tells the worker, which stops it.
    let (_, slow_job) =
        seed::build(&mut conn, ws, slow_version, owner, 2, Transition::Stop, None).await;
    seed::wait_for_status(&mut conn, slow_job, &[JobStatus::Running], WAIT_CAP).await;
    let asked = tokio::time::Instant::now();
    diesel::update(provisioner_jobs::table.find(slow_job))
        .set(provisioner_jobs::status.eq(JobStatus::Canceling))
        .execute(&mut conn)
        .await
        .expect("cancel");
    let canceled =
        seed::wait_for_status(&mut conn, slow_job, &[JobStatus::Canceled], WAIT_CAP).await;
    let cancel_took = asked.elapsed();
    assert!(canceled.completed_at.is_some());

    shutdown.cancel();
    let stopped = tokio::time::timeout(WAIT_CAP, worker).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "worker did not stop cleanly: {stopped:?}");
    println!(
        "provisioner: a running job canceled {:.0} ms after the request (NOTIFY, or the 2 s \
         heartbeat as fallback)",
        cancel_took.as_secs_f64() * 1000.0
    );
}

#[tokio::test]
async fn starting_simulated_agents_become_ready_when_due() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let owner = seed::user(&mut conn, "gus", None).await;
    let spec = TemplateSpec {
        source: serde_json::json!({"duration_ms": 0, "agent_start_secs": 30}),
        ..TemplateSpec::default()
    };
    let (template, version) = seed::template(&mut conn, "dev", spec).await;
    let ws = seed::workspace(&mut conn, owner, template, "ws", 0, None).await;
    let (build, _) = seed::build(&mut conn, ws, version, owner, 1, Transition::Start, None).await;
    let started = JobResult::Succeeded(BuildOutput {
        state: None,
        agents: vec![AgentSpec { name: "main".to_owned(), start_secs: 30 }],
    });
    run_to_completion(&mut conn, Utc::now(), started).await;
    assert_eq!(agent_state(&mut conn, build).await, AgentLifecycle::Starting);

    let config = SimulatedConfig::default();
    let soon = Utc::now() + chrono::TimeDelta::seconds(5);
    assert_eq!(flip_due_agents(&mut conn, &config, soon).await.expect("sweep"), 0);
    let later = Utc::now() + chrono::TimeDelta::seconds(40);
    assert_eq!(flip_due_agents(&mut conn, &config, later).await.expect("sweep"), 1);
    assert_eq!(agent_state(&mut conn, build).await, AgentLifecycle::Ready);
}

/// The completion writes the job's end, the build's state, every agent (a ready one with its
/// ready time, a starting one without, returned with the instant it is due) and the audit
/// entry, all in its one transaction.
#[tokio::test]
async fn a_completion_writes_the_state_the_agents_and_the_audit_entry() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let owner = seed::user(&mut conn, "dora", None).await;
    let (template, version) = seed::template(&mut conn, "dev", TemplateSpec::default()).await;
    let ws = seed::workspace(&mut conn, owner, template, "ws", 3600, None).await;
    let (build, job) = seed::build(&mut conn, ws, version, owner, 1, Transition::Start, None).await;
    let at = monday_nine();
    let result = JobResult::Succeeded(BuildOutput {
        state: Some(b"after".to_vec()),
        agents: vec![
            AgentSpec { name: "main".to_owned(), start_secs: 0 },
            AgentSpec { name: "slow".to_owned(), start_secs: 30 },
        ],
    });
    let acquired = acquire_next_job(&mut conn, "w", at).await.expect("acquire").expect("job");
    assert_eq!(acquired.id, job);
    let completion = complete_job(&mut conn, job, "w", &result, at)
        .await
        .expect("complete")
        .expect("still ours");
    assert_eq!(completion.status, JobStatus::Succeeded);
    assert_eq!(seed::job_row(&mut conn, job).await.status, JobStatus::Succeeded);
    assert_eq!(build_row(&mut conn, build).await.provisioner_state, Some(b"after".to_vec()));

    let mut agents: Vec<WorkspaceAgent> = workspace_agents::table
        .filter(workspace_agents::build_id.eq(build))
        .select(WorkspaceAgent::as_select())
        .order(workspace_agents::name)
        .load(&mut conn)
        .await
        .expect("agents");
    assert_eq!(agents.len(), 2);
    let slow = agents.pop().expect("slow");
    let main = agents.pop().expect("main");
    assert_eq!(
        (main.name.as_str(), main.lifecycle_state, main.ready_at),
        ("main", AgentLifecycle::Ready, Some(at))
    );
    assert_eq!(
        (slow.name.as_str(), slow.lifecycle_state, slow.ready_at),
        ("slow", AgentLifecycle::Starting, None)
    );
    assert_eq!(completion.starting_agents, vec![(slow.id, at + chrono::TimeDelta::seconds(30))]);

    assert_eq!(completed_entries(&mut conn, ws).await, 1);
}

/// The workspace's `build_completed` audit entries.
async fn completed_entries(conn: &mut AsyncPgConnection, ws: Uuid) -> i64 {
    poolkeeper::db::schema::audit_log::table
        .filter(poolkeeper::db::schema::audit_log::action.eq("build_completed"))
        .filter(poolkeeper::db::schema::audit_log::resource_id.eq(ws))
        .count()
        .get_result(conn)
        .await
        .expect("audit entries")
}

/// A prebuild's pending start build (of a template of its own), acquired by worker "w";
/// returns the workspace and its job as the worker read it when it took it.
async fn taken_prebuild_start(conn: &mut AsyncPgConnection, ttl_secs: i64) -> (Uuid, JobContext) {
    let (template, version) = seed::template(conn, "dev", TemplateSpec::default()).await;
    let ws = seed::workspace(conn, PREBUILDS_USER_ID, template, "pb", ttl_secs, None).await;
    let (_, job) =
        seed::build(conn, ws, version, PREBUILDS_USER_ID, 1, Transition::Start, None).await;
    let acquired = acquire_next_job(conn, "w", monday_nine()).await.expect("acquire").expect("job");
    assert_eq!(acquired.id, job);
    let ctx = job_context(conn, acquired).await.expect("context").expect("the job has a build");
    (ws, ctx)
}

/// Completes the job of `ctx` as its worker does (one agent, ready at once).
async fn complete_as_taken(conn: &mut AsyncPgConnection, ctx: &JobContext) -> Completion {
    let taken = AsTaken { build: &ctx.build, owner_id: ctx.workspace.owner_id };
    complete_taken_job(conn, taken, "w", &one_agent(), monday_nine())
        .await
        .expect("complete")
        .expect("still ours")
}

/// A prebuild's start build ends in one statement that takes no lock before it writes: it
/// completes while another transaction holds a key-share lock on the job (as a foreign-key
/// check does), which the transactional path's `FOR UPDATE` would wait behind.
#[tokio::test]
async fn a_prebuild_build_ends_in_one_statement() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (ws, ctx) = taken_prebuild_start(&mut conn, 0).await;
    let job = ctx.job.id;

    let mut holder = db.conn().await;
    diesel::sql_query("BEGIN").execute(&mut holder).await.expect("begin");
    diesel::sql_query("SELECT 1 FROM provisioner_jobs WHERE id = $1 FOR KEY SHARE")
        .bind::<diesel::sql_types::Uuid, _>(job)
        .execute(&mut holder)
        .await
        .expect("key-share lock");
    let ended = tokio::time::timeout(Duration::from_secs(5), complete_as_taken(&mut conn, &ctx))
        .await
        .expect("the end did not wait for the lock");
    diesel::sql_query("ROLLBACK").execute(&mut holder).await.expect("rollback");

    assert_eq!(ended.status, JobStatus::Succeeded);
    assert_eq!(ended.deadlines, None, "prebuilds get no deadline");
    assert_eq!(seed::job_row(&mut conn, job).await.status, JobStatus::Succeeded);
    assert_eq!(build_row(&mut conn, ctx.build.id).await.provisioner_state, Some(b"state".to_vec()));
    assert_eq!(agent_state(&mut conn, ctx.build.id).await, AgentLifecycle::Ready);
    assert_eq!(completed_entries(&mut conn, ws).await, 1);
}

/// A job canceled after the worker took it ends canceled, whatever the backend said: the
/// one-statement end, decided for a running job, writes nothing, and the transactional path
/// decides again from the job as it is.
#[tokio::test]
async fn a_job_canceled_after_it_was_taken_ends_canceled() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (_, ctx) = taken_prebuild_start(&mut conn, 0).await;
    diesel::update(provisioner_jobs::table.find(ctx.job.id))
        .set(provisioner_jobs::status.eq(JobStatus::Canceling))
        .execute(&mut conn)
        .await
        .expect("cancel");

    let ended = complete_as_taken(&mut conn, &ctx).await;
    assert_eq!(ended.status, JobStatus::Canceled);
    let job = seed::job_row(&mut conn, ctx.job.id).await;
    assert_eq!((job.status, job.canceled_at), (JobStatus::Canceled, Some(monday_nine())));
    let agents: i64 = workspace_agents::table
        .filter(workspace_agents::build_id.eq(ctx.build.id))
        .count()
        .get_result(&mut conn)
        .await
        .expect("agents");
    assert_eq!(agents, 0, "a canceled build records no agents");
    assert_eq!(build_row(&mut conn, ctx.build.id).await.provisioner_state, Some(b"state".to_vec()));
}

/// A workspace that changed owner after its job was taken is completed for its owner now:
/// a person's start build gets its deadline, which the end decided for a prebuild would not
/// have written.
#[tokio::test]
async fn a_workspace_handed_over_after_its_job_was_taken_gets_its_deadline() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let alice = seed::user(&mut conn, "alice", None).await;
    let (ws, ctx) = taken_prebuild_start(&mut conn, 3600).await;
    diesel::update(workspaces::table.find(ws))
        .set(workspaces::owner_id.eq(alice))
        .execute(&mut conn)
        .await
        .expect("hand over");

    let ended = complete_as_taken(&mut conn, &ctx).await;
    assert_eq!(ended.status, JobStatus::Succeeded);
    let deadline = ended.deadlines.and_then(|d| d.deadline);
    assert!(deadline.is_some(), "a person's start build with a TTL has a deadline");
    assert_eq!(build_row(&mut conn, ctx.build.id).await.deadline, deadline);
}

/// A worker ends a job and takes the next with it (sent behind the end, one call): the end is
/// saved, and the next pending job comes back taken, with its context read.
#[tokio::test]
async fn a_job_ends_and_the_next_is_taken_with_it() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (ws, ctx) = taken_prebuild_start(&mut conn, 0).await;
    let (next_job, next_ws) = pending_prebuild_start(&mut conn).await;

    let tags = poolkeeper_core::tags::Tags::new();
    let taken = AsTaken { build: &ctx.build, owner_id: ctx.workspace.owner_id };
    let next = NextJob { tags: &tags, now: monday_nine() + chrono::TimeDelta::seconds(1) };
    let (ended, acquired) =
        end_taken_job(&mut conn, taken, "w", &one_agent(), monday_nine(), Some(next)).await;

    let ended = ended.expect("end").expect("still ours");
    assert_eq!(ended.status, JobStatus::Succeeded);
    assert_eq!(completed_entries(&mut conn, ws).await, 1);
    let (job, context) = acquired.expect("sent").expect("acquire").expect("the next job");
    assert_eq!(job.id, next_job);
    let context = context.expect("its context, read with it");
    assert_eq!((context.build.job_id, context.workspace.id), (next_job, next_ws));
    let row = seed::job_row(&mut conn, next_job).await;
    assert_eq!((row.status, row.worker_id.as_deref()), (JobStatus::Running, Some("w")));
}

/// An end that finds its job canceled meanwhile is decided again under the job's lock; the
/// job taken with it is still handed back, not lost.
#[tokio::test]
async fn the_next_job_is_kept_when_the_end_is_decided_again() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (_, ctx) = taken_prebuild_start(&mut conn, 0).await;
    let (next_job, _) = pending_prebuild_start(&mut conn).await;
    diesel::update(provisioner_jobs::table.find(ctx.job.id))
        .set(provisioner_jobs::status.eq(JobStatus::Canceling))
        .execute(&mut conn)
        .await
        .expect("cancel");

    let tags = poolkeeper_core::tags::Tags::new();
    let taken = AsTaken { build: &ctx.build, owner_id: ctx.workspace.owner_id };
    let next = NextJob { tags: &tags, now: monday_nine() + chrono::TimeDelta::seconds(1) };
    let (ended, acquired) =
        end_taken_job(&mut conn, taken, "w", &one_agent(), monday_nine(), Some(next)).await;

    assert_eq!(ended.expect("end").expect("still ours").status, JobStatus::Canceled);
    let (job, _) = acquired.expect("sent").expect("acquire").expect("the next job");
    assert_eq!(job.id, next_job);
}

/// Another prebuild's pending start build (of a template of its own): (job, workspace).
async fn pending_prebuild_start(conn: &mut AsyncPgConnection) -> (Uuid, Uuid) {
    let (template, version) = seed::template(conn, "next", TemplateSpec::default()).await;
    let ws = seed::workspace(conn, PREBUILDS_USER_ID, template, "pb-next", 0, None).await;
    let (_, job) =
        seed::build(conn, ws, version, PREBUILDS_USER_ID, 1, Transition::Start, None).await;
    (job, ws)
}
