//! The HTTP API through real HTTP: a server on an ephemeral port, a reqwest client, a
//! database of its own per test.

use crate::api_server;
use poolkeeper_tests::seed;

use api_server::TestApi as Api;
use chrono::{TimeDelta, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use poolkeeper::db::enums::{BuildReason, JobStatus, UserRole};
use poolkeeper::db::schema::{presets, templates, workspace_builds, workspaces};
use poolkeeper::db::PREBUILDS_USER_ID;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

const EXAMPLE: &str = include_str!("../../examples/templates.toml");

impl Api {
    async fn preset_id(&self, name: &str) -> Uuid {
        let mut conn = self.db.conn().await;
        presets::table
            .inner_join(
                templates::table
                    .on(templates::active_version_id.eq(presets::template_version_id.nullable())),
            )
            .filter(presets::name.eq(name))
            .select(presets::id)
            .first(&mut conn)
            .await
            .expect("preset")
    }

    /// A ready prebuild of `preset`: owned by the pool, build #1 a succeeded start, agent ready.
    async fn seed_prebuild(&self, preset: &str, age_secs: i64) -> Uuid {
        let mut conn = self.db.conn().await;
        let (preset_id, version_id, template_id): (Uuid, Uuid, Uuid) = presets::table
            .inner_join(
                templates::table
                    .on(templates::active_version_id.eq(presets::template_version_id.nullable())),
            )
            .filter(presets::name.eq(preset))
            .select((presets::id, presets::template_version_id, templates::id))
            .first(&mut conn)
            .await
            .expect("preset");
        let created = Utc::now() - TimeDelta::seconds(age_secs);
        let prebuild = seed::WorkspaceSeed::prebuild(template_id, version_id, preset_id, created);
        seed::workspace(&mut conn, prebuild).await
    }
}

fn create_body(name: &str, preset: Option<&str>) -> Value {
    let mut body = json!({"template": "python-dev", "name": name});
    if let Some(preset) = preset {
        body["preset"] = json!(preset);
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_takes_the_oldest_ready_prebuild_and_falls_back_to_a_fresh_build() {
    let api = Api::start().await;
    let (alice, token) = api.user("alice", UserRole::Member).await;
    let older = api.seed_prebuild("small", 600).await;
    let newer = api.seed_prebuild("small", 60).await;

    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/workspaces",
            &token,
            Some(json!({"template": "python-dev", "preset": "small", "name": "dev1",
                    "autostart_schedule": "CRON_TZ=Europe/Berlin 30 8 * * 1-5", "ttl_secs": 3600})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["claimed"], json!(true));
    assert_eq!(body["workspace"]["id"], json!(older));
    assert_eq!(body["workspace"]["owner_id"], json!(alice));
    assert_eq!(body["workspace"]["ttl_secs"], json!(3600));
    assert!(body["workspace"]["next_start_at"].is_string(), "{body}");
    assert_eq!(body["workspace"]["latest_build"]["reason"], json!("claim"));
    assert_eq!(body["workspace"]["latest_build"]["build_number"], json!(2));

    let (status, body) = api
        .call(Method::POST, "/api/v1/workspaces", &token, Some(create_body("dev2", Some("small"))))
        .await;
    assert_eq!((status, &body["claimed"]), (StatusCode::CREATED, &json!(true)));
    assert_eq!(body["workspace"]["id"], json!(newer));
    // The template default TTL (8 h) when the request names none.
    assert_eq!(body["workspace"]["ttl_secs"], json!(28800));

    // Pool empty: a fresh workspace and a pending first build.
    let (status, body) = api
        .call(Method::POST, "/api/v1/workspaces", &token, Some(create_body("dev3", Some("small"))))
        .await;
    assert_eq!((status, &body["claimed"]), (StatusCode::CREATED, &json!(false)), "{body}");
    assert_eq!(body["workspace"]["latest_build"]["build_number"], json!(1));
    assert_eq!(body["workspace"]["latest_build"]["status"], json!("pending"));

    // Same name again: 409 naming the field.
    let (status, body) =
        api.call(Method::POST, "/api/v1/workspaces", &token, Some(create_body("DEV3", None))).await;
    assert_eq!((status, &body["field"]), (StatusCode::CONFLICT, &json!("name")), "{body}");

    let (status, body) = api.call(Method::GET, "/api/v1/workspaces", &token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_array().map(Vec::len), Some(3));
    // Two claims were timed; the fresh build is not a claim.
    let text = api.metrics.encode();
    assert!(text.lines().any(|l| l == "poolkeeper_claim_duration_seconds_count 2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_claims_on_ten_prebuilds_claim_each_once() {
    let api = Api::start().await;
    let mut prebuilds = Vec::new();
    for i in 0..10 {
        prebuilds.push(api.seed_prebuild("small", 1000 - i).await);
    }
    let mut tokens = Vec::new();
    for i in 0..5 {
        tokens.push(api.user(&format!("user{i}"), UserRole::Member).await.1);
    }
    let api = std::sync::Arc::new(api);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let api = api.clone();
        let token = tokens[i % 5].clone();
        tasks.push(tokio::spawn(async move {
            api.call(
                Method::POST,
                "/api/v1/workspaces",
                &token,
                Some(create_body(&format!("ws{i}"), Some("small"))),
            )
            .await
        }));
    }
    let mut claimed = Vec::new();
    let mut fresh = 0;
    for task in tasks {
        let (status, body) = task.await.expect("task");
        assert_eq!(status, StatusCode::CREATED, "{body}");
        if body["claimed"] == json!(true) {
            claimed.push(body["workspace"]["id"].as_str().expect("id").to_owned());
        } else {
            fresh += 1;
        }
    }
    claimed.sort();
    let before = claimed.len();
    claimed.dedup();
    assert_eq!((before, claimed.len(), fresh), (10, 10, 40));
    let mut conn = api.db.conn().await;
    let pool_left: i64 = workspaces::table
        .filter(workspaces::owner_id.eq(PREBUILDS_USER_ID))
        .count()
        .get_result(&mut conn)
        .await
        .expect("count");
    assert_eq!(pool_left, 0);
    // Each claimed prebuild has exactly one claim build.
    let claims: i64 = workspace_builds::table
        .filter(workspace_builds::reason.eq(BuildReason::Claim))
        .count()
        .get_result(&mut conn)
        .await
        .expect("count");
    assert_eq!(claims, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_matrix() {
    let api = Api::start().await;
    let (_, owner) = api.user("olivia", UserRole::Owner).await;
    let (_, admin) = api.user("adam", UserRole::TemplateAdmin).await;
    let (_, member) = api.user("mia", UserRole::Member).await;
    let (_, other) = api.user("otto", UserRole::Member).await;

    // 401 without, or with a wrong, token.
    let (status, _) = api.call(Method::GET, "/api/v1/workspaces", "", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = api.call(Method::GET, "/api/v1/workspaces", "pk_nope", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    let (_, body) = api
        .call(Method::POST, "/api/v1/workspaces", &member, Some(create_body("mine", None)))
        .await;
    let mine = body["workspace"]["id"].as_str().expect("id").to_owned();
    let prebuilt = api.seed_prebuild("large", 100).await;
    let prebuilt2 = api.seed_prebuild("large", 50).await;

    // Another member: 404, never 403, for someone else's workspace.
    for (method, path) in [
        (Method::GET, format!("/api/v1/workspaces/{mine}")),
        (Method::POST, format!("/api/v1/workspaces/{mine}/stop")),
        (Method::DELETE, format!("/api/v1/workspaces/{mine}")),
    ] {
        let (status, _) = api.call(method.clone(), &path, &other, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
    }
    // Template admins do not see other people's workspaces either.
    let (status, _) =
        api.call(Method::DELETE, &format!("/api/v1/workspaces/{mine}"), &admin, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Members may not delete prebuilt workspaces.
    let (status, _) =
        api.call(Method::DELETE, &format!("/api/v1/workspaces/{prebuilt}"), &member, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Template admins may delete prebuilt ones, but not operate them.
    let (status, _) =
        api.call(Method::POST, &format!("/api/v1/workspaces/{prebuilt}/stop"), &admin, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) =
        api.call(Method::DELETE, &format!("/api/v1/workspaces/{prebuilt}"), &admin, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["latest_build"]["transition"], json!("delete"));
    // Owners do everything.
    let (status, body) =
        api.call(Method::DELETE, &format!("/api/v1/workspaces/{prebuilt2}"), &owner, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, _) =
        api.call(Method::GET, &format!("/api/v1/workspaces/{mine}"), &owner, None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = api.call(Method::GET, "/api/v1/workspaces", &owner, None).await;
    assert_eq!(body.as_array().map(Vec::len), Some(3));
    let (_, body) = api.call(Method::GET, "/api/v1/workspaces", &other, None).await;
    assert_eq!(body.as_array().map(Vec::len), Some(0));

    // The member operates its own workspace; a second build waits for the first.
    let (status, body) =
        api.call(Method::POST, &format!("/api/v1/workspaces/{mine}/stop"), &member, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = api
        .call(
            Method::PUT,
            &format!("/api/v1/workspaces/{mine}/ttl"),
            &member,
            Some(json!({"ttl_secs": 600})),
        )
        .await;
    assert_eq!((status, &body["ttl_secs"]), (StatusCode::OK, &json!(600)), "{body}");
    let (status, body) = api
        .call(
            Method::PUT,
            &format!("/api/v1/workspaces/{mine}/autostart"),
            &member,
            Some(json!({"schedule": "CRON_TZ=UTC 0 9 * * 1-5"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["next_start_at"].is_string());
    let (status, _) =
        api.call(Method::POST, &format!("/api/v1/workspaces/{mine}/activity"), &member, None).await;
    assert_eq!(status, StatusCode::OK);

    // Settings: owners only. Templates and invalidation: owners and template admins.
    for (token, expected) in [
        (&member, StatusCode::FORBIDDEN),
        (&admin, StatusCode::FORBIDDEN),
        (&owner, StatusCode::OK),
    ] {
        let (status, _) = api
            .call(
                Method::PUT,
                "/api/v1/prebuilds/settings",
                token,
                Some(json!({"reconciliation_paused": true})),
            )
            .await;
        assert_eq!(status, expected);
    }
    let (_, body) = api.call(Method::GET, "/api/v1/prebuilds/status", &member, None).await;
    assert_eq!(body["reconciliation_paused"], json!(true), "{body}");
    assert_eq!(body["presets"].as_array().map(Vec::len), Some(2), "{body}");
    let small = api.preset_id("small").await;
    for (token, expected) in
        [(&member, StatusCode::FORBIDDEN), (&admin, StatusCode::OK), (&owner, StatusCode::OK)]
    {
        let (status, _) = api
            .call(Method::POST, &format!("/api/v1/presets/{small}/invalidate"), token, None)
            .await;
        assert_eq!(status, expected);
    }
    let (status, _) = api
        .call(Method::POST, &format!("/api/v1/presets/{}/invalidate", Uuid::new_v4()), &owner, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for (token, expected) in [(&member, StatusCode::FORBIDDEN), (&admin, StatusCode::OK)] {
        let (status, body) = api
            .send(
                Method::PUT,
                "/api/v1/templates/default/python-dev",
                token,
                Some("application/toml"),
                Some(EXAMPLE),
            )
            .await;
        assert_eq!(status, expected, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_field() {
    let api = Api::start().await;
    let (_, token) = api.user("mia", UserRole::Owner).await;
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"template": "python-dev", "name": "x", "ttl_secs": "long"}),
            StatusCode::BAD_REQUEST,
            "ttl_secs",
        ),
        (
            json!({"template": "python-dev", "name": "x", "ttl_secs": -1}),
            StatusCode::BAD_REQUEST,
            "ttl_secs",
        ),
        (json!({"template": "python-dev", "name": "no spaces"}), StatusCode::BAD_REQUEST, "name"),
        (json!({"template": "python-dev"}), StatusCode::BAD_REQUEST, "name"),
        (
            json!({"template": "python-dev", "name": "x", "autostart_schedule": "0 9 1 * *"}),
            StatusCode::BAD_REQUEST,
            "autostart_schedule",
        ),
        (
            json!({"template": "python-dev", "name": "x", "preset": "huge"}),
            StatusCode::BAD_REQUEST,
            "preset",
        ),
        (json!({"template": "nope", "name": "x"}), StatusCode::NOT_FOUND, "template"),
        (
            json!({"template": "python-dev", "name": "x", "colour": "red"}),
            StatusCode::BAD_REQUEST,
            "colour",
        ),
        (
            json!({"template": "python-dev", "name": "x", "parameters": {"cpu": 2}}),
            StatusCode::BAD_REQUEST,
            "parameters.cpu",
        ),
    ];
    for (body, status, field) in cases {
        let (got, answer) =
            api.call(Method::POST, "/api/v1/workspaces", &token, Some(body.clone())).await;
        assert_eq!((got, answer["field"].as_str()), (status, Some(field)), "{body} -> {answer}");
        assert!(answer["error"].is_string());
    }
    let (status, body) = api
        .send(
            Method::POST,
            "/api/v1/workspaces",
            &token,
            Some("application/json"),
            Some("{not json"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("invalid JSON")));
    let (status, body) = api.call(Method::GET, "/api/v1/workspaces/not-a-uuid", &token, None).await;
    assert_eq!((status, &body["field"]), (StatusCode::BAD_REQUEST, &json!("id")));
    // Bodies over the size limit: tests/api_hostile_input.rs (a client that streams a huge
    // body may see the connection closed before it reads the 413).
    // A templates file with a bad schedule: 400 naming it, nothing written.
    let bad = EXAMPLE
        .replace("* 9-18 * * 1-5", "0 9-18 * * 1-5")
        .replace("name = \"v1\"", "name = \"v9\"");
    let (status, body) = api
        .send(
            Method::PUT,
            "/api/v1/templates/default/python-dev",
            &token,
            Some("application/toml"),
            Some(&bad),
        )
        .await;
    assert_eq!(
        (status, &body["field"]),
        (StatusCode::BAD_REQUEST, &json!("presets[0].schedules[0].cron")),
        "{body}"
    );
    let (status, body) = api
        .send(
            Method::PUT,
            "/api/v1/templates/default/other-name",
            &token,
            Some("application/toml"),
            Some(EXAMPLE),
        )
        .await;
    assert_eq!(
        (status, &body["field"]),
        (StatusCode::BAD_REQUEST, &json!("template.name")),
        "{body}"
    );
    // Unchanged file: a no-op.
    let (status, body) = api
        .send(
            Method::PUT,
            "/api/v1/templates/default/python-dev",
            &token,
            Some("application/toml"),
            Some(EXAMPLE),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["version_created"], &body["template_updated"]),
        (&json!(false), &json!(false))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_route() {
    let api = Api::start().await;
    let response = api.client.get(api.url("/api/v1/openapi.json")).send().await.expect("get");
    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = response.json().await.expect("json");
    let expected = [
        ("post", "/api/v1/workspaces"),
        ("get", "/api/v1/workspaces"),
        ("get", "/api/v1/workspaces/{id}"),
        ("post", "/api/v1/workspaces/{id}/start"),
        ("post", "/api/v1/workspaces/{id}/stop"),
        ("delete", "/api/v1/workspaces/{id}"),
        ("put", "/api/v1/workspaces/{id}/autostart"),
        ("put", "/api/v1/workspaces/{id}/ttl"),
        ("post", "/api/v1/workspaces/{id}/activity"),
        ("post", "/api/v1/workspaces/{id}/agents/{agent}/token"),
        ("post", "/api/v1/workspaces/{id}/agents/{agent}/lifecycle"),
        ("get", "/api/v1/prebuilds/status"),
        ("put", "/api/v1/prebuilds/settings"),
        ("post", "/api/v1/presets/{id}/invalidate"),
        ("get", "/api/v1/templates"),
        ("get", "/api/v1/templates/{org}/{name}"),
        ("put", "/api/v1/templates/{org}/{name}"),
        ("get", "/api/v1/users"),
        ("post", "/api/v1/users/{user}/suspend"),
        ("post", "/api/v1/users/{user}/activate"),
        ("put", "/api/v1/users/{user}/quiet-hours"),
        ("get", "/api/v1/tokens"),
        ("delete", "/api/v1/tokens/{id}"),
        ("get", "/api/v1/audit"),
        ("get", "/api/v1/users/me/notification-preferences"),
        ("put", "/api/v1/users/me/notification-preferences"),
        ("get", "/api/v1/openapi.json"),
        ("get", "/api/v1/buildinfo"),
    ];
    for (method, path) in expected {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} missing");
    }
    let listed: usize = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|p| p.as_object().map_or(0, |m| m.len()))
        .sum();
    assert_eq!(listed, expected.len());
    // And every route in the table answers (not 404/405 from the router) without a token.
    for route in poolkeeper::api::routes() {
        let path = route
            .path
            .replace("{id}", &Uuid::new_v4().to_string())
            .replace("{agent}", "main")
            .replace("{org}", "default")
            .replace("{name}", "x")
            .replace("{user}", "me");
        let method = Method::from_bytes(route.method.to_uppercase().as_bytes()).expect("method");
        let status =
            api.client.request(method, api.url(&path)).send().await.expect("send").status();
        assert!(
            status == StatusCode::UNAUTHORIZED || status == StatusCode::OK,
            "{} {path}: {status}",
            route.method
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_bumps_a_near_deadline_and_last_used_at() {
    let api = Api::start().await;
    let (_, token) = api.user("mia", UserRole::Member).await;
    api.seed_prebuild("small", 300).await;
    let (_, body) = api
        .call(Method::POST, "/api/v1/workspaces", &token, Some(create_body("dev", Some("small"))))
        .await;
    let id: Uuid = body["workspace"]["id"].as_str().expect("id").parse().expect("uuid");
    let build: Uuid =
        body["workspace"]["latest_build"]["id"].as_str().expect("id").parse().expect("uuid");
    // The claim build completes with a deadline 10 minutes away.
    let mut conn = api.db.conn().await;
    let now = Utc::now();
    let job: Uuid = workspace_builds::table
        .find(build)
        .select(workspace_builds::job_id)
        .first(&mut conn)
        .await
        .expect("job");
    seed::set_job_status(&mut conn, job, JobStatus::Succeeded, now).await;
    diesel::update(workspace_builds::table.find(build))
        .set(workspace_builds::deadline.eq(now + TimeDelta::minutes(10)))
        .execute(&mut conn)
        .await
        .expect("deadline");
    let (status, body) =
        api.call(Method::POST, &format!("/api/v1/workspaces/{id}/activity"), &token, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deadline: Option<chrono::DateTime<Utc>> = workspace_builds::table
        .find(build)
        .select(workspace_builds::deadline)
        .first(&mut conn)
        .await
        .expect("deadline");
    // SPEC §3: bumped to A + activity_bump (1 h in the example template).
    let deadline = deadline.expect("a deadline");
    assert!(deadline >= now + TimeDelta::minutes(59), "{deadline} vs {now}");
    assert!(deadline <= Utc::now() + TimeDelta::minutes(61), "{deadline}");
}

/// `POST /presets/{id}/invalidate` replaces the pool: the next reconciler cycle deletes every
/// prebuild created before the call and builds as many new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidating_a_preset_replaces_its_pool() {
    use poolkeeper::daemon::{CycleOutcome, PrebuildReconciler};
    let api = Api::start().await;
    let (_, admin) = api.user("adam", UserRole::TemplateAdmin).await;
    let large = api.preset_id("large").await;
    let live = format!(
        "SELECT w.id FROM workspaces w WHERE NOT w.deleted AND w.owner_id = '{PREBUILDS_USER_ID}'
           AND EXISTS (SELECT 1 FROM workspace_builds b WHERE b.workspace_id = w.id
                       AND b.preset_id = '{large}')"
    );
    let live_ids = || async {
        let mut conn = api.db.conn().await;
        let mut ids: Vec<Uuid> = diesel::sql_query(&live)
            .load::<IdRow>(&mut conn)
            .await
            .expect("live prebuilds")
            .into_iter()
            .map(|row| row.id)
            .collect();
        ids.sort();
        ids
    };
    let mut reconciler = PrebuildReconciler::new(
        api.db.pool().clone(),
        api.db.url(),
        poolkeeper_core::prebuilds::ReconcilerConfig {
            backoff_interval_secs: 60,
            backoff_lookback_secs: 3600,
            failure_hard_limit: 3,
            max_pending_creates_per_preset: 0,
            failed_keep: 3,
            failed_grace_secs: 3600,
        },
        2,
    );
    // Cycles, each followed by every job succeeding, until one finds nothing to do.
    let mut settle = async || {
        for _ in 0..5 {
            let outcome = reconciler.cycle(Utc::now()).await.expect("cycle");
            let CycleOutcome::Ran(stats) = outcome else { panic!("not leading: {outcome:?}") };
            if stats.jobs == 0 {
                return;
            }
            let mut conn = api.db.conn().await;
            complete_pending_jobs(&mut conn).await;
        }
        panic!("the pool did not settle in 5 cycles");
    };
    settle().await;
    let before = live_ids().await;
    assert!(!before.is_empty(), "the large pool was not filled");

    let (status, body) =
        api.call(Method::POST, &format!("/api/v1/presets/{large}/invalidate"), &admin, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    settle().await;
    let after = live_ids().await;
    assert_eq!(after.len(), before.len(), "the pool keeps its size");
    assert!(after.iter().all(|id| !before.contains(id)), "{before:?} -> {after:?}");
    println!(
        "invalidate: {} prebuilds replaced by {} new ones, violations: 0",
        before.len(),
        after.len()
    );
}

#[derive(diesel::QueryableByName)]
struct IdRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
}

/// What a provisioner does, in SQL: pending jobs succeed, start builds get a ready agent,
/// delete builds mark their workspace deleted.
async fn complete_pending_jobs(conn: &mut diesel_async::AsyncPgConnection) {
    for sql in [
        "INSERT INTO workspace_agents (build_id, name, lifecycle_state)
         SELECT b.id, 'main', 'ready' FROM workspace_builds b
           JOIN provisioner_jobs j ON j.id = b.job_id
          WHERE j.status = 'pending' AND b.transition = 'start'",
        "UPDATE workspaces SET deleted = true WHERE id IN (
           SELECT b.workspace_id FROM workspace_builds b JOIN provisioner_jobs j ON j.id = b.job_id
            WHERE j.status = 'pending' AND b.transition = 'delete')",
        "UPDATE provisioner_jobs SET status = 'succeeded', started_at = now(), completed_at = now()
          WHERE status = 'pending'",
    ] {
        diesel::sql_query(sql).execute(conn).await.expect("complete the pending jobs");
    }
}

/// One definition of a ready prebuild: the API's pool status, the `eligible` metric and the
/// core's claim choice count the same prebuilds, on a pool holding one claimable prebuild,
/// one past the preset's expiration TTL and one whose agent is still starting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_the_metric_and_the_core_agree_on_what_is_ready() {
    use poolkeeper::daemon::{CycleOutcome, PrebuildReconciler};
    use poolkeeper_core::prebuilds::{choose_claim, plan, ReconcilerConfig};
    let api = Api::start().await;
    let (_, member) = api.user("mia", UserRole::Member).await;
    let claimable = api.seed_prebuild("small", 60).await;
    api.seed_prebuild("small", 2 * 86_400).await; // the preset's TTL is a day
    let starting = api.seed_prebuild("small", 60).await;
    {
        let mut conn = api.db.conn().await;
        diesel::sql_query(format!(
            "UPDATE workspace_agents SET lifecycle_state = 'starting' WHERE build_id IN
               (SELECT id FROM workspace_builds WHERE workspace_id = '{starting}')"
        ))
        .execute(&mut conn)
        .await
        .expect("agent starting");
    }
    let small = api.preset_id("small").await;
    let now = Utc::now();

    // The core: the plan's eligible count and the claim's candidates.
    let config = ReconcilerConfig {
        backoff_interval_secs: 60,
        backoff_lookback_secs: 3600,
        failure_hard_limit: 3,
        max_pending_creates_per_preset: 0,
        failed_keep: 3,
        failed_grace_secs: 0,
    };
    let mut conn = api.db.conn().await;
    let loaded = poolkeeper::store::prebuilds::load_prebuild_snapshot(&mut conn, now, config)
        .await
        .expect("snapshot");
    let plans = plan(now, &loaded.snapshot);
    let index = loaded.snapshot.presets.iter().position(|p| p.id == small).expect("preset");
    let core_eligible = plans[index].state.eligible;
    let preset = &loaded.snapshot.presets[index];
    let candidates = choose_claim(&loaded.snapshot.running, preset, now).candidates;
    assert_eq!(candidates, [claimable], "the core hands out the fresh, ready one only");

    // The metric, from a reconciler cycle (paused first, so that it only observes).
    let metrics = std::sync::Arc::new(poolkeeper::telemetry::Metrics::new());
    poolkeeper::store::settings::set_reconciliation_paused(&mut conn, true, chrono::Utc::now())
        .await
        .expect("pause");
    let mut reconciler = PrebuildReconciler::new(api.db.pool().clone(), api.db.url(), config, 2)
        .with_metrics(metrics.clone());
    assert_eq!(reconciler.cycle(now).await.expect("cycle"), CycleOutcome::Paused);
    let text = metrics.encode();
    let metric_eligible = text
        .lines()
        .find(|l| l.starts_with("poolkeeper_prebuilds_eligible{") && l.contains("preset=\"small\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no eligible series for small:\n{text}"));

    // The API.
    let (status, body) = api.call(Method::GET, "/api/v1/prebuilds/status", &member, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let pool = body["presets"]
        .as_array()
        .and_then(|presets| presets.iter().find(|p| p["preset"] == "small"))
        .unwrap_or_else(|| panic!("no small pool: {body}"));

    assert_eq!(core_eligible, 1);
    assert_eq!(metric_eligible, 1.0, "the metric");
    assert_eq!(pool["ready"], 1, "the API: {pool}");
    assert_eq!(pool["eligible"], 1, "the API: {pool}");
}
