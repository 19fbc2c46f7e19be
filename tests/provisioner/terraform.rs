//! The terraform backend against the real CLI, offline: a `terraform_data` template is
//! applied (start), then destroyed (delete), the state round-tripping through the builds.
//! Without `terraform` on PATH (looked up by the build script) the tests that need it are
//! compiled as ignored, so the test summary counts them ("2 ignored"); one that still finds
//! no terraform at run time skips with the reason printed.

use poolkeeper_tests::provisioner_seed as seed;

use std::path::PathBuf;

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use poolkeeper::db::enums::{JobStatus, ProvisionerKind, Transition};
use poolkeeper::db::schema::{provisioner_jobs, workspace_builds, workspaces};
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::provisioner::backend::{BuildFailure, TerraformConfig};
use poolkeeper::provisioner::context::load_context;
use poolkeeper::provisioner::{
    acquire_next_job, complete_job, run_worker, Backends, CancellationToken, JobResult,
    WorkerConfig,
};
use seed::TemplateSpec;
use uuid::Uuid;

fn template_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("shell/templates/terraform-example")
}

/// Acquire the next job, run it on `backends`, complete it; returns the job's final status.
async fn run_one(conn: &mut AsyncPgConnection, backends: &Backends) -> (Uuid, JobStatus) {
    let job = acquire_next_job(conn, "tf", Utc::now()).await.expect("acquire").expect("a job");
    let job_id = job.id;
    let ctx = load_context(conn, job).await.expect("context");
    let result = match backends.run(&ctx, &CancellationToken::new()).await {
        Ok(output) => JobResult::Succeeded(output),
        Err(failure) => JobResult::Failed(failure),
    };
    if let JobResult::Failed(BuildFailure { error, .. }) = &result {
        eprintln!("build failed: {error}");
    }
    complete_job(conn, job_id, "tf", &result, Utc::now()).await.expect("complete");
    let status = provisioner_jobs::table
        .find(job_id)
        .select(provisioner_jobs::status)
        .get_result(conn)
        .await
        .expect("job");
    (job_id, status)
}

async fn state_of(conn: &mut AsyncPgConnection, build: Uuid) -> serde_json::Value {
    let state: Option<Vec<u8>> = workspace_builds::table
        .find(build)
        .select(workspace_builds::provisioner_state)
        .get_result(conn)
        .await
        .expect("build");
    serde_json::from_slice(&state.expect("a state")).expect("JSON state")
}

fn resource_count(state: &serde_json::Value) -> usize {
    state["resources"]
        .as_array()
        .map(|resources| {
            resources.iter().map(|r| r["instances"].as_array().map_or(0, Vec::len)).sum()
        })
        .unwrap_or(0)
}

#[tokio::test]
#[cfg_attr(not(terraform_available), ignore = "terraform is not on PATH")]
async fn terraform_applies_and_destroys_offline() {
    if poolkeeper_tests::skip_without_terraform() {
        return;
    }
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let work_dir = std::env::temp_dir().join(format!("poolkeeper-tf-test-{}", Uuid::new_v4()));
    let backends = Backends {
        terraform: TerraformConfig { bin: "terraform".to_owned(), work_dir: work_dir.clone() },
        ..Backends::default()
    };
    let owner = seed::user(&mut conn, "erin", None).await;
    let spec = TemplateSpec {
        provisioner: ProvisionerKind::Terraform,
        source: serde_json::json!({"dir": template_dir()}),
        ..TemplateSpec::default()
    };
    let (template, version) = seed::template(&mut conn, "tf", spec).await;
    let ws = seed::workspace(&mut conn, owner, template, "tfws", 3600, None).await;

    let (start, _) = seed::build(&mut conn, ws, version, owner, 1, Transition::Start, None).await;
    let (_, status) = run_one(&mut conn, &backends).await;
    assert_eq!(status, JobStatus::Succeeded);
    let state = state_of(&mut conn, start).await;
    assert_eq!(resource_count(&state), 2, "home and compute: {state}");
    assert_eq!(state["outputs"]["compute_running"]["value"], serde_json::json!(true));

    // The next build carries the state over, as the store does.
    let carried = serde_json::to_vec(&state).expect("state");
    let (delete, _) =
        seed::build(&mut conn, ws, version, owner, 2, Transition::Delete, Some(carried)).await;
    let (_, status) = run_one(&mut conn, &backends).await;
    assert_eq!(status, JobStatus::Succeeded);
    assert_eq!(resource_count(&state_of(&mut conn, delete).await), 0);
    let deleted: bool = workspaces::table
        .find(ws)
        .select(workspaces::deleted)
        .get_result(&mut conn)
        .await
        .expect("workspace");
    assert!(deleted);
    let _ = std::fs::remove_dir_all(work_dir);
}

#[tokio::test]
async fn a_missing_terraform_binary_fails_the_job_clearly() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let work_dir = std::env::temp_dir().join(format!("poolkeeper-tf-missing-{}", Uuid::new_v4()));
    let backends = Backends {
        terraform: TerraformConfig {
            bin: "/nonexistent/terraform".to_owned(),
            work_dir: work_dir.clone(),
        },
        ..Backends::default()
    };
    let owner = seed::user(&mut conn, "finn", None).await;
    let spec = TemplateSpec {
        provisioner: ProvisionerKind::Terraform,
        source: serde_json::json!({"dir": template_dir()}),
        ..TemplateSpec::default()
    };
    let (template, version) = seed::template(&mut conn, "tf", spec).await;
    let ws = seed::workspace(&mut conn, owner, template, "tfws", 0, None).await;
    seed::build(&mut conn, ws, version, owner, 1, Transition::Start, None).await;
    let (job, status) = run_one(&mut conn, &backends).await;
    assert_eq!(status, JobStatus::Failed);
    let error: Option<String> = provisioner_jobs::table
        .find(job)
        .select(provisioner_jobs::error)
        .get_result(&mut conn)
        .await
        .expect("job");
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("/nonexistent/terraform") && e.contains("not found")),
        "{error:?}"
    );
    let _ = std::fs::remove_dir_all(work_dir);
}

/// A module whose apply writes its process id to the working directory, then takes a minute.
const SLOW_MODULE: &str = r#"
variable "workspace_id" { type = string }
variable "workspace_name" { type = string }
variable "owner" { type = string }
variable "transition" { type = string }

resource "terraform_data" "slow" {
  input = var.workspace_id
  provisioner "local-exec" {
    command = "echo $$ > apply-started.tmp && mv apply-started.tmp apply-started && exec sleep 60"
  }
}
"#;

async fn job_status(conn: &mut AsyncPgConnection, job: Uuid) -> JobStatus {
    provisioner_jobs::table
        .find(job)
        .select(provisioner_jobs::status)
        .get_result(conn)
        .await
        .expect("job")
}

/// Polls `check` every 100 ms for at most `limit`; the worker runs on real time.
async fn eventually(limit: std::time::Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(terraform_available), ignore = "terraform is not on PATH")]
async fn cancelling_a_running_terraform_apply_stops_it() {
    if poolkeeper_tests::skip_without_terraform() {
        return;
    }
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let root = std::env::temp_dir().join(format!("poolkeeper-tf-cancel-{}", Uuid::new_v4()));
    let module = root.join("module");
    std::fs::create_dir_all(&module).expect("module dir");
    std::fs::write(module.join("main.tf"), SLOW_MODULE).expect("module");
    let work_dir = root.join("work");

    let owner = seed::user(&mut conn, "gale", None).await;
    let spec = TemplateSpec {
        provisioner: ProvisionerKind::Terraform,
        source: serde_json::json!({"dir": module}),
        ..TemplateSpec::default()
    };
    let (template, version) = seed::template(&mut conn, "slow-tf", spec).await;
    let ws = seed::workspace(&mut conn, owner, template, "slowws", 0, None).await;

    let shutdown = CancellationToken::new();
    let config = WorkerConfig {
        tags: Default::default(),
        worker_id: "tf-worker".to_owned(),
        poll_interval: std::time::Duration::from_millis(200),
        heartbeat_interval: std::time::Duration::from_secs(60),
        backends: Backends {
            terraform: TerraformConfig { bin: "terraform".to_owned(), work_dir: work_dir.clone() },
            ..Backends::default()
        },
    };
    let worker = tokio::spawn(run_worker(db.pool().clone(), config, shutdown.clone()));
    let (_, job) = seed::build(&mut conn, ws, version, owner, 1, Transition::Start, None).await;

    // Cancel only once terraform is inside the slow apply.
    // Each job runs in a directory of its own, removed when the job ends.
    let marker = work_dir.join(format!("job-{job}")).join("apply-started");
    let started = eventually(std::time::Duration::from_secs(60), async || marker.exists()).await;
    assert!(
        started,
        "terraform never reached the apply (job {:?})",
        job_status(&mut conn, job).await
    );
    assert_eq!(job_status(&mut conn, job).await, JobStatus::Running);
    let pid = std::fs::read_to_string(&marker).expect("the apply's pid");
    diesel::update(provisioner_jobs::table.find(job))
        .set(provisioner_jobs::status.eq(JobStatus::Canceling))
        .execute(&mut conn)
        .await
        .expect("cancel");

    // Well before the apply's minute is up, the job is recorded as canceled.
    let canceled = eventually(std::time::Duration::from_secs(30), async || {
        let mut conn = db.conn().await;
        job_status(&mut conn, job).await == JobStatus::Canceled
    })
    .await;
    assert!(canceled, "the job was not canceled: {:?}", job_status(&mut conn, job).await);
    let (completed_at, worker_id): (Option<chrono::DateTime<Utc>>, Option<String>) =
        provisioner_jobs::table
            .find(job)
            .select((provisioner_jobs::completed_at, provisioner_jobs::worker_id))
            .get_result(&mut conn)
            .await
            .expect("job");
    assert!(completed_at.is_some());
    assert_eq!(worker_id.as_deref(), Some("tf-worker"));
    // Nothing terraform started outlives the cancel.
    let proc_dir = std::path::Path::new("/proc").join(pid.trim());
    let gone = eventually(std::time::Duration::from_secs(20), async || !proc_dir.exists()).await;
    assert!(gone, "the apply's command (pid {}) is still running", pid.trim());

    shutdown.cancel();
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(30), worker).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "worker did not stop cleanly: {stopped:?}");
    let _ = std::fs::remove_dir_all(root);
}
