//! The terraform backend against the real CLI, offline: a `terraform_data` template is
//! applied (start), then destroyed (delete), the state round-tripping through the builds.
//! Skipped, with the reason printed, when `terraform` is not on PATH.

#[path = "support/provisioner_seed.rs"]
mod seed;

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
    acquire_next_job, complete_job, Backends, CancellationToken, JobResult,
};
use seed::TemplateSpec;
use uuid::Uuid;

fn terraform_available() -> bool {
    std::process::Command::new("terraform")
        .arg("version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

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
async fn terraform_applies_and_destroys_offline() {
    if !terraform_available() {
        eprintln!("skipped: `terraform` is not on PATH");
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
