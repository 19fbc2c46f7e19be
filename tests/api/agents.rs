//! Agent tokens and lifecycle reports through real HTTP: a person who may operate the
//! workspace mints an agent's token; the agent reports its state with it. Wrong or stale
//! tokens are 401; another agent, existing or not, is 404; the state machine is enforced.

use crate::api_server;

use api_server::TestApi as Api;

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use poolkeeper::db::enums::{AgentLifecycle, UserRole};
use poolkeeper::db::schema::{audit_log, workspace_agents};
use poolkeeper::provisioner::backend::{AgentSpec, BuildOutput};
use poolkeeper::provisioner::{acquire_next_job, complete_job, JobResult};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

impl Api {
    /// Completes every pending job as a start with one agent, `main`, still starting.
    async fn complete_pending(&self) {
        let mut conn = self.db.conn().await;
        while let Some(job) = acquire_next_job(&mut conn, "w", Utc::now()).await.expect("acquire") {
            let result = JobResult::Succeeded(BuildOutput {
                state: None,
                agents: vec![AgentSpec { name: "main".to_owned(), start_secs: 600 }],
            });
            complete_job(&mut conn, job.id, "w", &result, Utc::now()).await.expect("complete");
        }
    }

    async fn agent_state(&self, workspace: &str) -> Vec<(AgentLifecycle, bool)> {
        let mut conn = self.db.conn().await;
        let rows: Vec<(AgentLifecycle, Option<chrono::DateTime<Utc>>)> = diesel::sql_query(
            "SELECT a.lifecycle_state, a.ready_at FROM workspace_agents a
             JOIN workspace_builds b ON b.id = a.build_id WHERE b.workspace_id = $1
             ORDER BY b.build_number",
        )
        .bind::<diesel::sql_types::Uuid, _>(workspace.parse::<Uuid>().expect("id"))
        .load::<AgentRow>(&mut conn)
        .await
        .expect("agents")
        .into_iter()
        .map(|r| (r.lifecycle_state, r.ready_at))
        .collect();
        rows.into_iter().map(|(state, ready_at)| (state, ready_at.is_some())).collect()
    }
}

#[derive(diesel::QueryableByName)]
struct AgentRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    lifecycle_state: AgentLifecycle,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>)]
    ready_at: Option<chrono::DateTime<Utc>>,
}

fn lifecycle_path(workspace: &str, agent: &str) -> String {
    format!("/api/v1/workspaces/{workspace}/agents/{agent}/lifecycle")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_tokens_and_lifecycle_reports() {
    let api = Api::start().await;
    let (_, ann) = api.user("ann", UserRole::Member).await;
    let (_, eve) = api.user("eve", UserRole::Member).await;
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/workspaces",
            &ann,
            Some(json!({"template": "python-dev", "name": "dev"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ws = body["workspace"]["id"].as_str().expect("id").to_owned();
    api.complete_pending().await;
    let token_path = format!("/api/v1/workspaces/{ws}/agents/main/token");

    // Minting: only who may operate the workspace; another person's workspace is 404.
    let (status, _) = api.call(Method::POST, &token_path, &eve, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.call_as(Method::POST, &token_path, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let missing = format!("/api/v1/workspaces/{ws}/agents/nope/token");
    let (status, _) = api.call(Method::POST, &missing, &ann, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = api.call(Method::POST, &token_path, &ann, None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let agent = body["token"].as_str().expect("token").to_owned();

    let path = lifecycle_path(&ws, "main");
    let ready = Some(json!({"state": "ready"}));
    // No token, a person's API token, a made-up token: 401, the same answer for each.
    for token in [None, Some(ann.as_str()), Some("pka_made_up")] {
        let (status, body) = api.call_as(Method::POST, &path, token, ready.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}: {body}");
    }
    // Speaking for another agent or workspace, existing or not: 404.
    let other = Uuid::new_v4().to_string();
    for other_path in [lifecycle_path(&other, "main"), lifecycle_path(&ws, "sidecar")] {
        let (status, _) = api.call(Method::POST, &other_path, &agent, ready.clone()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{other_path}");
    }
    let (status, body) =
        api.call(Method::POST, &lifecycle_path("nope", "main"), &agent, ready.clone()).await;
    assert_eq!((status, &body["field"]), (StatusCode::BAD_REQUEST, &json!("id")));
    for bad in [
        json!({"state": "sleeping"}),
        json!({"state": 1}),
        json!({}),
        json!({"state": "ready", "x": 1}),
    ] {
        let (status, body) = api.call(Method::POST, &path, &agent, Some(bad.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    assert_eq!(api.agent_state(&ws).await, vec![(AgentLifecycle::Starting, false)]);

    // starting → ready → (ready again: a retried report) → starting is refused.
    let (status, body) = api.call(Method::POST, &path, &agent, ready.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((&body["old_state"], &body["state"]), (&json!("starting"), &json!("ready")));
    assert_eq!(api.agent_state(&ws).await, vec![(AgentLifecycle::Ready, true)]);
    let (status, _) = api.call(Method::POST, &path, &agent, ready.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) =
        api.call(Method::POST, &path, &agent, Some(json!({"state": "starting"}))).await;
    assert_eq!((status, &body["field"]), (StatusCode::CONFLICT, &json!("state")), "{body}");
    assert_eq!(api.agent_state(&ws).await, vec![(AgentLifecycle::Ready, true)]);

    // A new token replaces the old one.
    let (_, body) = api.call(Method::POST, &token_path, &ann, None).await;
    let fresh = body["token"].as_str().expect("token").to_owned();
    let shutting = Some(json!({"state": "shutting_down"}));
    let (status, _) = api.call(Method::POST, &path, &agent, shutting.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old token is revoked");
    let (status, _) = api.call(Method::POST, &path, &fresh, shutting).await;
    assert_eq!(status, StatusCode::OK);

    // Once the workspace has a newer build, the old build's agent has nothing to report.
    let (status, _) =
        api.call(Method::POST, &format!("/api/v1/workspaces/{ws}/stop"), &ann, None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = api.call(Method::POST, &path, &fresh, Some(json!({"state": "off"}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Every change is in the audit log; a token's secret never is.
    let mut conn = api.db.conn().await;
    let entries: Vec<(String, String, Value)> = audit_log::table
        .filter(audit_log::resource_type.eq("workspace_agent"))
        .order(audit_log::id)
        .select((audit_log::action, audit_log::actor, audit_log::diff))
        .load(&mut conn)
        .await
        .expect("audit");
    let actions: Vec<&str> = entries.iter().map(|(a, _, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        ["agent_token", "agent_lifecycle", "agent_token", "agent_lifecycle"],
        "{entries:?}"
    );
    assert_eq!(entries[0].1, "ann");
    assert_eq!(entries[1].1, "agent:main");
    let text = serde_json::to_string(&entries).expect("json");
    assert!(!text.contains(&agent) && !text.contains(&fresh), "no secret in the audit log");
    let hashes: Vec<Option<String>> = workspace_agents::table
        .select(workspace_agents::auth_token_hash)
        .load(&mut conn)
        .await
        .expect("hashes");
    assert!(hashes.iter().flatten().all(|h| h.len() == 64 && !h.contains(&fresh)));
}
