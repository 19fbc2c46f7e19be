//! What a backend is given: the job's context (its build, workspace, version, owner and the
//! preset's parameters), and a simulated build that takes no time.

use poolkeeper_tests::provisioner_seed as seed;

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use poolkeeper::db::enums::Transition;
use poolkeeper::db::schema::workspace_builds;
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::provisioner::context::{load_context, JobContext};
use poolkeeper::provisioner::{
    acquire_next_job, acquire_next_job_with_context, Backends, CancellationToken,
};
use poolkeeper_core::tags::Tags;
use seed::TemplateSpec;
use uuid::Uuid;

/// A preset of `version` with `parameters` (name, value); returns its id.
async fn preset(
    conn: &mut AsyncPgConnection,
    version: Uuid,
    name: &str,
    parameters: &[(&str, &str)],
) -> Uuid {
    let id = Uuid::new_v4();
    let mut sql = format!(
        "INSERT INTO presets (id, template_version_id, name, desired_instances)
         VALUES ('{id}', '{version}', '{name}', 0);"
    );
    for (key, value) in parameters {
        sql.push_str(&format!(
            "INSERT INTO preset_parameters (preset_id, name, value) VALUES ('{id}', '{key}', '{value}');"
        ));
    }
    conn.batch_execute(&sql).await.expect("insert the preset");
    id
}

/// Acquire the next job and read its context.
async fn next_context(conn: &mut AsyncPgConnection) -> JobContext {
    let job = acquire_next_job(conn, "ctx", Utc::now()).await.expect("acquire").expect("a job");
    load_context(conn, job).await.expect("context")
}

/// Acquire the next job with its context, read in the same round trip.
async fn next_context_with_acquisition(conn: &mut AsyncPgConnection) -> JobContext {
    let (job, ctx) = acquire_next_job_with_context(conn, "ctx", &Tags::new(), Utc::now())
        .await
        .expect("acquire")
        .expect("a job");
    let ctx = ctx.expect("the context was read with the acquisition");
    assert_eq!(ctx.job, job);
    ctx
}

#[tokio::test]
async fn a_jobs_context_carries_its_own_presets_parameters_sorted() {
    jobs_contexts_carry_their_own_presets_parameters(false).await;
}

#[tokio::test]
async fn a_context_read_with_the_acquisition_is_the_same() {
    jobs_contexts_carry_their_own_presets_parameters(true).await;
}

async fn jobs_contexts_carry_their_own_presets_parameters(with_acquisition: bool) {
    let next_context = async |conn: &mut AsyncPgConnection| {
        if with_acquisition {
            next_context_with_acquisition(conn).await
        } else {
            next_context(conn).await
        }
    };
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let owner = seed::user(&mut conn, "alice", None).await;
    let (template, version) = seed::template(&mut conn, "dev", TemplateSpec::default()).await;
    let chosen =
        preset(&mut conn, version, "eu", &[("region", "eu-west"), ("cpu", "4"), ("zone", "b")])
            .await;
    preset(&mut conn, version, "us", &[("region", "us-east")]).await;
    let bare = preset(&mut conn, version, "bare", &[]).await;

    let with_preset = seed::workspace(&mut conn, owner, template, "a", 0, None).await;
    let (build, job) =
        seed::build(&mut conn, with_preset, version, owner, 1, Transition::Start, None).await;
    diesel::update(workspace_builds::table.find(build))
        .set(workspace_builds::preset_id.eq(chosen))
        .execute(&mut conn)
        .await
        .expect("give the build its preset");
    let ctx = next_context(&mut conn).await;
    assert_eq!((ctx.job.id, ctx.build.id, ctx.workspace.id), (job, build, with_preset));
    assert_eq!((ctx.version.id, ctx.owner.id), (version, owner));
    let expected = [("cpu", "4"), ("region", "eu-west"), ("zone", "b")]
        .map(|(name, value)| (name.to_owned(), value.to_owned()));
    assert_eq!(ctx.parameters, expected, "only the build's preset's, sorted by name");

    let without_parameters = seed::workspace(&mut conn, owner, template, "b", 0, None).await;
    let (build, _) =
        seed::build(&mut conn, without_parameters, version, owner, 1, Transition::Start, None)
            .await;
    diesel::update(workspace_builds::table.find(build))
        .set(workspace_builds::preset_id.eq(bare))
        .execute(&mut conn)
        .await
        .expect("give the build its preset");
    let ctx = next_context(&mut conn).await;
    assert_eq!(ctx.build.id, build);
    assert!(ctx.parameters.is_empty(), "{:?}", ctx.parameters);

    let without_preset = seed::workspace(&mut conn, owner, template, "c", 0, None).await;
    let (build, _) =
        seed::build(&mut conn, without_preset, version, owner, 1, Transition::Start, None).await;
    let ctx = next_context(&mut conn).await;
    assert_eq!(ctx.build.id, build);
    assert!(ctx.parameters.is_empty(), "{:?}", ctx.parameters);
}

/// A simulated build of no duration ends without waiting for the timer, whose next tick is
/// up to a millisecond away (longer than the rest of a job): it runs here on a runtime that
/// has no timer at all. One that is already canceled still ends canceled.
#[tokio::test]
async fn a_simulated_build_of_no_duration_needs_no_timer() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let owner = seed::user(&mut conn, "alice", None).await;
    let (template, version) = seed::template(&mut conn, "dev", TemplateSpec::default()).await;
    let ws = seed::workspace(&mut conn, owner, template, "ws", 0, None).await;
    seed::build(&mut conn, ws, version, owner, 1, Transition::Start, None).await;
    let ctx = next_context(&mut conn).await;

    let (succeeded, canceled) = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime without a timer");
        let backends = Backends::default();
        runtime.block_on(async {
            let succeeded = backends.run(&ctx, &CancellationToken::new()).await.is_ok();
            let canceled = CancellationToken::new();
            canceled.cancel();
            let canceled = backends.run(&ctx, &canceled).await.is_err();
            (succeeded, canceled)
        })
    })
    .join()
    .expect("the build needed no timer");
    assert!(succeeded, "the build succeeded");
    assert!(canceled, "a canceled build ends canceled");
}
