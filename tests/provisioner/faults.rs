//! The provisioner under faults (issue 16), each test with a real worker on real PostgreSQL
//! and a fault injected by real means: a stream of job announcements, a TCP proxy that
//! refuses or resets the worker's connections, a reaper run with a skewed clock, a terraform
//! binary that leaves an unreadable state. Every test first proves it reached its fault.

use poolkeeper_tests::fault_proxy;
use poolkeeper_tests::provisioner_seed as seed;
use poolkeeper_tests::seed as store_seed;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use diesel::prelude::*;
use diesel::sql_types::{Double, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use fault_proxy::{Fault, FaultProxy};
use futures_util::StreamExt;
use poolkeeper::db::enums::{JobStatus, ProvisionerKind, Transition};
use poolkeeper::db::models::{NewTemplateVersion, ProvisionerJob};
use poolkeeper::db::pool::{self, PoolConfig};
use poolkeeper::db::schema::{audit_log, template_versions, workspace_builds};
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::db::{DbPool, JOB_CHANNEL};
use poolkeeper::provisioner::backend::BuildFailure;
use poolkeeper::provisioner::{
    acquire_next_job, complete_job, reap_stale_jobs, run_worker, BackendError, Backends,
    CancellationToken, JobResult, ReaperConfig, SimulatedConfig, TerraformConfig, WorkerConfig,
};
use poolkeeper_core::prebuilds::FinishedStatus;
use seed::TemplateSpec;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

async fn state_of(conn: &mut AsyncPgConnection, build: Uuid) -> Option<Vec<u8>> {
    workspace_builds::table
        .find(build)
        .select(workspace_builds::provisioner_state)
        .get_result(conn)
        .await
        .expect("build row")
}

fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("poolkeeper-{label}-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir
}

fn worker_config(id: &str, work_dir: &Path, heartbeat: Duration) -> WorkerConfig {
    WorkerConfig {
        tags: Default::default(),
        worker_id: id.to_owned(),
        poll_interval: Duration::from_millis(200),
        heartbeat_interval: heartbeat,
        backends: Backends {
            simulated: SimulatedConfig::default(),
            terraform: TerraformConfig {
                bin: "terraform".to_owned(),
                work_dir: work_dir.to_path_buf(),
            },
        },
    }
}

/// A pool for the worker alone, through `proxy`.
async fn proxied_pool(db: &TestDatabase, proxy: &FaultProxy) -> DbPool {
    let url = proxy.url(db.url());
    pool::build(
        &url,
        &PoolConfig {
            max_size: 4,
            connect_timeout: Duration::from_secs(2),
            ..PoolConfig::default()
        },
    )
    .expect("proxied pool")
}

async fn stop(shutdown: CancellationToken, worker: tokio::task::JoinHandle<impl Sized>) {
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(30), worker).await;
    assert!(stopped.is_ok(), "the worker did not stop");
}

/// Seconds since the job's last heartbeat, by the database's clock.
async fn heartbeat_age(conn: &mut AsyncPgConnection, job: Uuid) -> f64 {
    #[derive(QueryableByName)]
    struct Age {
        #[diesel(sql_type = Double)]
        age: f64,
    }
    let row: Age = diesel::sql_query(
        "SELECT EXTRACT(EPOCH FROM now() - heartbeat_at)::float8 AS age
           FROM provisioner_jobs WHERE id = $1",
    )
    .bind::<diesel::sql_types::Uuid, _>(job)
    .get_result(conn)
    .await
    .expect("heartbeat age");
    row.age
}

async fn failure_kind(conn: &mut AsyncPgConnection, job: Uuid) -> Option<String> {
    #[derive(QueryableByName)]
    struct Kind {
        #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
        failure_kind: Option<String>,
    }
    let row: Kind =
        diesel::sql_query("SELECT failure_kind::text FROM provisioner_jobs WHERE id = $1")
            .bind::<diesel::sql_types::Uuid, _>(job)
            .get_result(conn)
            .await
            .expect("failure kind");
    row.failure_kind
}

/// Item 1: a steady stream of announcements of other jobs must not postpone the heartbeat
/// of a running one (nor get it reaped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_of_other_jobs_do_not_starve_the_heartbeat() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let owner = seed::user(&mut conn, "hana", None).await;
    let spec = TemplateSpec {
        source: serde_json::json!({"duration_ms": 4000}),
        ..TemplateSpec::default()
    };
    let (template, version) = seed::template(&mut conn, "slow", spec).await;
    let ws = seed::workspace(&mut conn, owner, template, "ws", 0, None).await;

    // Count the announcements that really went out on the channel during the build.
    let mut listener = AsyncPgConnection::establish(db.url()).await.expect("listen connection");
    diesel::sql_query(format!("LISTEN {JOB_CHANNEL}"))
        .execute(&mut listener)
        .await
        .expect("LISTEN");
    let heard = Arc::new(AtomicUsize::new(0));
    let stop_listening = CancellationToken::new();
    let listening = {
        let (heard, stop) = (heard.clone(), stop_listening.clone());
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(listener.notifications_stream());
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    item = stream.next() => match item {
                        Some(Ok(_)) => { heard.fetch_add(1, Ordering::SeqCst); }
                        _ => return,
                    },
                }
            }
        })
    };

    let work_dir = temp_dir("hb");
    let heartbeat = Duration::from_millis(300);
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(run_worker(
        db.pool().clone(),
        worker_config("hb-worker", &work_dir, heartbeat),
        shutdown.clone(),
    ));
    let (_, job) = seed::build(&mut conn, ws, version, owner, 1, Transition::Start, None).await;
    seed::wait_for_status(&mut conn, job, &[JobStatus::Running], WAIT).await;
    let heard_before = AtomicUsize::load(&heard, Ordering::SeqCst);

    // Announcements of other jobs every 50 ms, much faster than the heartbeat.
    let stop_announcing = CancellationToken::new();
    let announcing = {
        let pool = db.pool().clone();
        let stop = stop_announcing.clone();
        tokio::spawn(async move {
            let mut conn = pool.get().await.expect("announcer connection");
            while !stop.is_cancelled() {
                diesel::sql_query("SELECT pg_notify($1, $2)")
                    .bind::<Text, _>(JOB_CHANNEL)
                    .bind::<Text, _>(Uuid::new_v4().to_string())
                    .execute(&mut conn)
                    .await
                    .expect("announce");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let reaper = ReaperConfig {
        heartbeat_timeout: Duration::from_millis(1500),
        pending_timeout: Duration::from_secs(3600),
    };
    let mut max_age = 0.0f64;
    let mut reaped = 0;
    let mut samples = 0;
    while seed::job_row(&mut conn, job).await.status == JobStatus::Running {
        max_age = max_age.max(heartbeat_age(&mut conn, job).await);
        reaped += reap_stale_jobs(db.pool(), Utc::now(), &reaper).await.expect("reap");
        samples += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_announcing.cancel();
    announcing.await.expect("announcer");
    let during = AtomicUsize::load(&heard, Ordering::SeqCst) - heard_before;
    stop_listening.cancel();
    listening.await.expect("listener");
    stop(shutdown, worker).await;

    assert!(during >= 30, "only {during} announcements arrived during the build");
    let row = seed::job_row(&mut conn, job).await;
    assert_eq!(reaped, 0, "the live job was reaped ({:?})", row.error);
    assert!(samples >= 20, "the build was not observed ({samples} samples)");
    assert_eq!(row.status, JobStatus::Succeeded, "{:?}", row.error);
    assert!(
        max_age < 1.0,
        "the heartbeat was {max_age:.2}s old with a {}ms interval",
        heartbeat.as_millis()
    );
    eprintln!(
        "summary: announcements during the build: {during}, samples: {samples}, \
         oldest heartbeat: {max_age:.2}s, reaped: {reaped}"
    );
    let _ = std::fs::remove_dir_all(work_dir);
}

/// Whether a file of the spool directory `spool` holds the result of `job` (a worker's
/// journal once it is saved is emptied, and one found at start is removed once saved).
fn spooled(spool: &std::path::Path, job: uuid::Uuid) -> bool {
    let job = job.to_string();
    std::fs::read_dir(spool)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .any(|entry| std::fs::read_to_string(entry.path()).is_ok_and(|text| text.contains(&job)))
}

/// Item 2: the database goes down while the build runs; the build finishes during the
/// outage and its worker is shut down before the database is back. A new worker on the same
/// work directory saves the state.
async fn state_survives_an_outage_and_a_restart(spec: TemplateSpec, label: &str) {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let proxy = FaultProxy::for_url(db.url()).await;
    let owner = seed::user(&mut conn, "ivan", None).await;
    let (template, version) = seed::template(&mut conn, label, spec).await;
    let ws = seed::workspace(&mut conn, owner, template, "ws", 0, None).await;
    let work_dir = temp_dir(label);
    let spool = work_dir.join("spool");

    let shutdown = CancellationToken::new();
    let config = worker_config("outage-a", &work_dir, Duration::from_millis(200));
    let worker =
        tokio::spawn(run_worker(proxied_pool(&db, &proxy).await, config, shutdown.clone()));
    let (build, job) = seed::build(&mut conn, ws, version, owner, 1, Transition::Start, None).await;
    let acquired = seed::wait_for_status(&mut conn, job, &[JobStatus::Running], WAIT).await;
    // A heartbeat after the acquisition's: the backend is running. Then the outage.
    let deadline = tokio::time::Instant::now() + WAIT;
    while seed::job_row(&mut conn, job).await.heartbeat_at == acquired.heartbeat_at {
        assert!(tokio::time::Instant::now() < deadline, "the build never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.set(Fault::Reset);

    // The build ends during the outage: its result lands in the spool, not the database.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !spooled(&spool, job) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the finished build was not spooled in {}",
            spool.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(proxy.fault() == Fault::Reset, "the database was up when the build finished");
    let row = seed::job_row(&mut conn, job).await;
    assert_eq!(row.status, JobStatus::Running, "the completion got through the outage");
    assert_eq!(state_of(&mut conn, build).await, None);

    // Stopped while the database is still down: the worker gives up retrying, keeps the spool.
    stop(shutdown, worker).await;
    assert!(spooled(&spool, job), "the spool lost the result before the state was saved");
    proxy.set(Fault::Pass);

    let shutdown = CancellationToken::new();
    let config = worker_config("outage-b", &work_dir, Duration::from_secs(60));
    let worker =
        tokio::spawn(run_worker(proxied_pool(&db, &proxy).await, config, shutdown.clone()));
    let done =
        seed::wait_for_status(&mut conn, job, &[JobStatus::Succeeded, JobStatus::Failed], WAIT)
            .await;
    stop(shutdown, worker).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{:?}", done.error);
    let state = state_of(&mut conn, build).await.expect("the build's state was saved");
    let state: serde_json::Value = serde_json::from_slice(&state).expect("a JSON state");
    assert!(state["resources"].is_array(), "not terraform's shape: {state}");
    assert!(!spooled(&spool, job), "the spool kept the result after the state was saved");
    eprintln!(
        "summary ({label}): refused connections during the outage: {}, state saved by the \
         restarted worker: {} resources",
        std::sync::atomic::AtomicU64::load(
            &proxy.counts().refused,
            std::sync::atomic::Ordering::Relaxed
        ),
        state["resources"].as_array().map_or(0, Vec::len)
    );
    let _ = std::fs::remove_dir_all(work_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_state_survives_an_outage_and_a_restart() {
    let spec = TemplateSpec {
        source: serde_json::json!({"duration_ms": 4000, "resources": ["home"]}),
        ..TemplateSpec::default()
    };
    state_survives_an_outage_and_a_restart(spec, "sim-outage").await;
}

fn example_module() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("shell/templates/terraform-example")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(terraform_available), ignore = "terraform is not on PATH")]
async fn terraform_state_survives_an_outage_and_a_restart() {
    if poolkeeper_tests::skip_without_terraform() {
        return;
    }
    // The example module plus a resource whose creation takes 4 s (a local command, no
    // network): the outage then always lands while terraform applies, however loaded the
    // machine is.
    let module = temp_dir("tf-outage-module");
    std::fs::create_dir_all(&module).expect("module dir");
    std::fs::copy(example_module().join("main.tf"), module.join("main.tf")).expect("main.tf");
    std::fs::write(
        module.join("slow.tf"),
        "resource \"terraform_data\" \"slow\" {\n  input = \"slow\"\n  \
         provisioner \"local-exec\" {\n    command = \"sleep 4\"\n  }\n}\n",
    )
    .expect("slow.tf");
    let spec = TemplateSpec {
        provisioner: ProvisionerKind::Terraform,
        source: serde_json::json!({"dir": module}),
        ..TemplateSpec::default()
    };
    state_survives_an_outage_and_a_restart(spec, "tf-outage").await;
    let _ = std::fs::remove_dir_all(module);
}

/// Item 2: a job reaped while its worker was still building keeps the state the build
/// produced (no newer build exists), and says what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaped_jobs_state_is_saved_when_no_newer_build_exists() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let owner = seed::user(&mut conn, "jan", None).await;
    let spec = TemplateSpec {
        // Long enough that the reaper surely runs mid-build, even on a loaded machine.
        source: serde_json::json!({"duration_ms": 8000, "resources": ["home"]}),
        ..TemplateSpec::default()
    };
    let (template, version) = seed::template(&mut conn, "reaped", spec).await;
    let ws = seed::workspace(&mut conn, owner, template, "ws", 0, None).await;
    let work_dir = temp_dir("reaped");
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(run_worker(
        db.pool().clone(),
        worker_config("reaped-worker", &work_dir, Duration::from_secs(60)),
        shutdown.clone(),
    ));
    let (build, job) = seed::build(&mut conn, ws, version, owner, 1, Transition::Start, None).await;
    seed::wait_for_status(&mut conn, job, &[JobStatus::Running], WAIT).await;
    let reaper = ReaperConfig {
        heartbeat_timeout: Duration::from_secs(60),
        pending_timeout: Duration::from_secs(3600),
    };
    // The worker looks lost (a partition, say): its heartbeat is old by the database's clock.
    // Aged again if a beat lands in between: the worker beats at once when it hears of its
    // job, and the job's announcement may reach it after it took the job from a poll.
    let mut reaped = 0;
    for _ in 0..5 {
        diesel::sql_query(
            "UPDATE provisioner_jobs SET heartbeat_at = now() - interval '10 minutes'
              WHERE id = $1",
        )
        .bind::<diesel::sql_types::Uuid, _>(job)
        .execute(&mut conn)
        .await
        .expect("age the heartbeat");
        reaped = reap_stale_jobs(db.pool(), Utc::now(), &reaper).await.expect("reap");
        if reaped > 0 {
            break;
        }
    }
    let status = seed::job_row(&mut conn, job).await.status;
    assert_eq!(reaped, 1, "the job was not reaped mid-build (it is {status})");
    let reaped = seed::job_row(&mut conn, job).await;
    assert_eq!(reaped.status, JobStatus::Failed);
    assert_eq!(state_of(&mut conn, build).await, None, "reaped after the build ended");

    // The build goes on and finishes; its state must reach the build.
    let deadline = tokio::time::Instant::now() + WAIT;
    let state = loop {
        if let Some(state) = state_of(&mut conn, build).await {
            break state;
        }
        assert!(tokio::time::Instant::now() < deadline, "the reaped build's state was lost");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop(shutdown, worker).await;
    let state: serde_json::Value = serde_json::from_slice(&state).expect("JSON state");
    assert_eq!(state["resources"][0]["name"], "home", "{state}");
    let row = seed::job_row(&mut conn, job).await;
    assert_eq!(row.status, JobStatus::Failed, "a reaped job stays failed");
    assert_eq!(failure_kind(&mut conn, job).await.as_deref(), Some("reaped"));
    assert!(
        row.error.as_deref().is_some_and(|e| e.contains("finished afterwards")),
        "the job does not say what happened: {:?}",
        row.error
    );
    let _ = std::fs::remove_dir_all(work_dir);
}

/// A stand-in for terraform (a shell script): `init` does nothing; `apply` records the
/// `.tf` files of its working directory as the state, or, when the module has a file named
/// `unreadable-state`, leaves a state that cannot be read (a directory in its place).
fn fake_terraform(dir: &Path) -> String {
    let script = dir.join("fake-terraform");
    std::fs::write(
        &script,
        r#"#!/bin/sh
case "$1" in
  init) exit 0 ;;
  apply|destroy)
    if [ -f unreadable-state ]; then rm -f terraform.tfstate; mkdir terraform.tfstate; exit 0; fi
    files=$(ls *.tf | tr '\n' ' ')
    printf '{"version":4,"files":"%s","resources":[]}' "$files" > terraform.tfstate
    exit 0 ;;
esac
exit 1
"#,
    )
    .expect("write the fake terraform");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("make it executable");
    }
    script.display().to_string()
}

/// Item 2: an apply that succeeded but left a state that cannot be read fails the job with
/// that error, never "succeeded without state".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_state_fails_the_job() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let base = temp_dir("unreadable");
    let module = base.join("module");
    std::fs::create_dir_all(&module).expect("module dir");
    std::fs::write(module.join("main.tf"), "# nothing\n").expect("module");
    std::fs::write(module.join("unreadable-state"), "").expect("marker");
    let owner = seed::user(&mut conn, "kim", None).await;
    let spec = TemplateSpec {
        provisioner: ProvisionerKind::Terraform,
        source: serde_json::json!({"dir": module}),
        ..TemplateSpec::default()
    };
    let (template, version) = seed::template(&mut conn, "unreadable", spec).await;
    let ws = seed::workspace(&mut conn, owner, template, "ws", 0, None).await;
    let mut config = worker_config("unreadable", &base.join("work"), Duration::from_secs(60));
    config.backends.terraform.bin = fake_terraform(&base);
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(run_worker(db.pool().clone(), config, shutdown.clone()));
    let (_, job) = seed::build(&mut conn, ws, version, owner, 1, Transition::Start, None).await;
    let done =
        seed::wait_for_status(&mut conn, job, &[JobStatus::Succeeded, JobStatus::Failed], WAIT)
            .await;
    stop(shutdown, worker).await;
    assert_eq!(done.status, JobStatus::Failed, "succeeded without a readable state");
    assert!(
        done.error.as_deref().is_some_and(|e| e.contains("terraform.tfstate")),
        "the error does not name the state file: {:?}",
        done.error
    );
    let _ = std::fs::remove_dir_all(base);
}

/// A second version of `template` whose module is `dir`.
async fn version_with_dir(conn: &mut AsyncPgConnection, template: Uuid, dir: &Path) -> Uuid {
    let id = Uuid::new_v4();
    diesel::insert_into(template_versions::table)
        .values(&NewTemplateVersion {
            id,
            template_id: template,
            name: "v2".to_owned(),
            message: String::new(),
            provisioner: ProvisionerKind::Terraform,
            source: serde_json::json!({"dir": dir}),
            created_at: None,
        })
        .execute(conn)
        .await
        .expect("insert version");
    id
}

/// Item 3: a file removed from the module in a new version is not applied again; every job
/// starts from a clean directory, removed afterwards. `bin` is the terraform to run.
async fn removed_files_are_not_applied(bin: Option<String>, label: &str) -> serde_json::Value {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let base = temp_dir(label);
    let (v1_dir, v2_dir) = (base.join("v1"), base.join("v2"));
    for dir in [&v1_dir, &v2_dir] {
        std::fs::create_dir_all(dir).expect("module dir");
        std::fs::copy(example_module().join("main.tf"), dir.join("main.tf")).expect("main.tf");
    }
    std::fs::write(
        v1_dir.join("extra.tf"),
        "resource \"terraform_data\" \"extra\" {\n  input = \"extra\"\n}\n",
    )
    .expect("extra.tf");
    let owner = seed::user(&mut conn, "lee", None).await;
    let spec = TemplateSpec {
        provisioner: ProvisionerKind::Terraform,
        source: serde_json::json!({"dir": v1_dir}),
        ..TemplateSpec::default()
    };
    let (template, v1) = seed::template(&mut conn, label, spec).await;
    let v2 = version_with_dir(&mut conn, template, &v2_dir).await;
    let ws = seed::workspace(&mut conn, owner, template, "ws", 0, None).await;
    let work_dir = base.join("work");
    let mut config = worker_config(label, &work_dir, Duration::from_secs(60));
    if let Some(bin) = bin {
        config.backends.terraform.bin = bin;
    }
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(run_worker(db.pool().clone(), config, shutdown.clone()));

    let (first, job) = seed::build(&mut conn, ws, v1, owner, 1, Transition::Start, None).await;
    let done =
        seed::wait_for_status(&mut conn, job, &[JobStatus::Succeeded, JobStatus::Failed], WAIT)
            .await;
    assert_eq!(done.status, JobStatus::Succeeded, "{:?}", done.error);
    let carried = state_of(&mut conn, first).await.expect("the first build's state");
    let first_state: serde_json::Value = serde_json::from_slice(&carried).expect("JSON");
    assert!(first_state.to_string().contains("extra"), "v1 did not apply extra.tf");
    let (second, job) =
        seed::build(&mut conn, ws, v2, owner, 2, Transition::Start, Some(carried)).await;
    let done =
        seed::wait_for_status(&mut conn, job, &[JobStatus::Succeeded, JobStatus::Failed], WAIT)
            .await;
    stop(shutdown, worker).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{:?}", done.error);
    let state = state_of(&mut conn, second).await.expect("the second build's state");
    let state: serde_json::Value = serde_json::from_slice(&state).expect("JSON");
    assert!(!state.to_string().contains("extra"), "v2 applied v1's removed extra.tf: {state}");
    let left: Vec<String> = std::fs::read_dir(&work_dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name != "spool")
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "job directories left behind: {left:?}");
    let _ = std::fs::remove_dir_all(base);
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(terraform_available), ignore = "terraform is not on PATH")]
async fn a_removed_tf_file_is_not_applied_by_terraform() {
    if poolkeeper_tests::skip_without_terraform() {
        return;
    }
    let state = removed_files_are_not_applied(None, "tf-clean").await;
    assert_eq!(state["outputs"]["compute_running"]["value"], serde_json::json!(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_tf_file_is_not_applied_by_a_stand_in() {
    let bin_dir = temp_dir("fake-bin");
    let state = removed_files_are_not_applied(Some(fake_terraform(&bin_dir)), "fake-clean").await;
    assert_eq!(state["files"], "main.tf ", "{state}");
    let _ = std::fs::remove_dir_all(bin_dir);
}

/// How many connections the proxy reset for its text rules.
fn text_resets(proxy: &FaultProxy) -> u64 {
    std::sync::atomic::AtomicU64::load(
        &proxy.counts().resets_on_text,
        std::sync::atomic::Ordering::Relaxed,
    )
}

/// A worker `worker_id` behind `proxy` (whose rules are set) runs one start build; `queued`
/// runs once the build is queued. Returns the job as it ended, the worker stopped.
async fn run_one_job_behind(
    db: &TestDatabase,
    proxy: &FaultProxy,
    worker_id: &str,
    queued: impl AsyncFnOnce(),
) -> ProvisionerJob {
    let mut conn = db.conn().await;
    let owner = seed::user(&mut conn, "max", None).await;
    let (template, version) = seed::template(&mut conn, "flaky", TemplateSpec::default()).await;
    let ws = seed::workspace(&mut conn, owner, template, "ws", 0, None).await;
    let work_dir = temp_dir(worker_id);
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(run_worker(
        proxied_pool(db, proxy).await,
        worker_config(worker_id, &work_dir, Duration::from_secs(60)),
        shutdown.clone(),
    ));
    let (_, job) = seed::build(&mut conn, ws, version, owner, 1, Transition::Start, None).await;
    queued().await;
    let done =
        seed::wait_for_status(&mut conn, job, &[JobStatus::Succeeded, JobStatus::Failed], WAIT)
            .await;
    stop(shutdown, worker).await;
    let _ = std::fs::remove_dir_all(work_dir);
    done
}

/// Item 4: a worker whose acquisition committed but whose reply was lost finds the job it
/// took and runs it (else the job stayed `running`, built by no one, until the reaper failed
/// it); connections lost while that job's build is then read are retried; the job runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_while_loading_the_job_is_retried() {
    let db = TestDatabase::new().await;
    let proxy = FaultProxy::for_url(db.url()).await;
    // The acquisition's reply (its row names the worker) never reaches the worker, once.
    proxy.reset_when_replied("flaky-worker-7f3a", 1);
    let done = run_one_job_behind(&db, &proxy, "flaky-worker-7f3a", async || {
        // Once the reply was lost: the statement that then reads the job's build, twice.
        let replied = tokio::time::timeout(WAIT, async {
            while text_resets(&proxy) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(replied.is_ok(), "the acquisition's reply was never lost");
        proxy.reset_when_sent("\"workspace_builds\".\"job_id\" = $1", 2);
    })
    .await;
    assert_eq!(text_resets(&proxy), 3, "the reply, then the read twice");
    assert_eq!(
        done.status,
        JobStatus::Succeeded,
        "a lost connection failed the job: {:?}",
        done.error
    );
    assert_eq!(done.worker_id.as_deref(), Some("flaky-worker-7f3a"));
}

/// Item 4: a connection lost while a job is taken with its build (one round trip) is
/// retried; the job runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_while_taking_a_job_is_retried() {
    let db = TestDatabase::new().await;
    let proxy = FaultProxy::for_url(db.url()).await;
    // The reads sent behind the acquisition find the job by its start instant.
    proxy.reset_when_sent("\"provisioner_jobs\".\"started_at\" = $", 1);
    let done = run_one_job_behind(&db, &proxy, "flaky-take", async || {}).await;
    assert_eq!(text_resets(&proxy), 1, "the connection was never reset");
    assert_eq!(done.status, JobStatus::Succeeded, "{:?}", done.error);
}

/// Item 4: a job that truly cannot run (no build) fails, with an audit entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_a_build_fails_with_an_audit_entry() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let work_dir = temp_dir("unrunnable");
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(run_worker(
        db.pool().clone(),
        worker_config("unrunnable", &work_dir, Duration::from_secs(60)),
        shutdown.clone(),
    ));
    let job = seed::job(&mut conn, Transition::Start, false, None).await;
    let done =
        seed::wait_for_status(&mut conn, job, &[JobStatus::Succeeded, JobStatus::Failed], WAIT)
            .await;
    stop(shutdown, worker).await;
    assert_eq!(done.status, JobStatus::Failed);
    let entries: i64 = audit_log::table
        .filter(audit_log::action.eq("job_unrunnable"))
        .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!("diff->>'job_id' = '{job}'")))
        .count()
        .get_result(&mut conn)
        .await
        .expect("audit entries");
    assert_eq!(entries, 1, "no audit entry for the unrunnable job");
    let _ = std::fs::remove_dir_all(work_dir);
}

/// Item 5: prebuild jobs that only waited in the queue and were failed by the reaper are not
/// build failures: they count toward neither the backoff nor the hard limit (rules §4 counts
/// failed builds). A build the template failed still counts.
#[tokio::test]
async fn queue_time_is_not_a_build_failure() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template, version) = store_seed::template(&mut conn, "busy").await;
    let preset = store_seed::preset(&mut conn, version, "p", 10).await;
    let long_ago = Utc::now() - chrono::TimeDelta::minutes(31);
    let prebuild = |created_at| store_seed::WorkspaceSeed {
        status: JobStatus::Pending,
        ..store_seed::WorkspaceSeed::prebuild(template, version, preset, created_at)
    };
    for _ in 0..3 {
        store_seed::workspace(&mut conn, prebuild(long_ago)).await;
    }
    let reaped = reap_stale_jobs(db.pool(), Utc::now(), &ReaperConfig::default()).await;
    assert_eq!(reaped.expect("reap"), 3, "the waiting prebuild jobs were not reaped");
    // One build the template really failed, completed by the provisioner's own code.
    store_seed::workspace(&mut conn, prebuild(Utc::now())).await;
    let job = acquire_next_job(&mut conn, "w", Utc::now()).await.expect("acquire").expect("job");
    let failure = BuildFailure { error: BackendError::InvalidSource("broken".into()), state: None };
    complete_job(&mut conn, job.id, "w", &JobResult::Failed(failure), Utc::now())
        .await
        .expect("complete");

    let loaded = poolkeeper::store::prebuilds::load_prebuild_snapshot(
        &mut conn,
        Utc::now(),
        store_seed::CONFIG,
    )
    .await
    .expect("snapshot");
    let failed = loaded
        .snapshot
        .recent_builds
        .iter()
        .filter(|b| b.preset_id == preset && b.job_status == FinishedStatus::Failed)
        .count();
    assert_eq!(failed, 1, "reaped queue waits counted as failed builds");
    assert_eq!(failure_kind(&mut conn, job.id).await.as_deref(), Some("build"));
}

/// Item 6: a reaper whose host clock runs ten minutes ahead of the database does not reap
/// a job whose worker is heartbeating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_reaper_clock_does_not_reap_a_live_job() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let owner = seed::user(&mut conn, "nia", None).await;
    let spec = TemplateSpec {
        source: serde_json::json!({"duration_ms": 5000}),
        ..TemplateSpec::default()
    };
    let (template, version) = seed::template(&mut conn, "skew", spec).await;
    let ws = seed::workspace(&mut conn, owner, template, "ws", 0, None).await;
    let work_dir = temp_dir("skew");
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(run_worker(
        db.pool().clone(),
        worker_config("skew", &work_dir, Duration::from_millis(200)),
        shutdown.clone(),
    ));
    let (_, job) = seed::build(&mut conn, ws, version, owner, 1, Transition::Start, None).await;
    seed::wait_for_status(&mut conn, job, &[JobStatus::Running], WAIT).await;
    let age = heartbeat_age(&mut conn, job).await;
    assert!(age < 5.0, "the job is not heartbeating ({age:.1}s)");
    let reaper = ReaperConfig {
        heartbeat_timeout: Duration::from_secs(60),
        pending_timeout: Duration::from_secs(3600),
    };
    let ahead = Utc::now() + chrono::TimeDelta::minutes(10);
    let reaped = reap_stale_jobs(db.pool(), ahead, &reaper).await.expect("reap");
    let mid_build = seed::job_row(&mut conn, job).await.status;
    let done =
        seed::wait_for_status(&mut conn, job, &[JobStatus::Succeeded, JobStatus::Failed], WAIT)
            .await;
    stop(shutdown, worker).await;
    assert_eq!(reaped, 0, "a skewed clock reaped a live job: {:?}", done.error);
    assert_eq!(mid_build, JobStatus::Running, "the reaper ran after the build");
    assert_eq!(done.status, JobStatus::Succeeded);
    let _ = std::fs::remove_dir_all(work_dir);
}
