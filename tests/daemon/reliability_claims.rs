//! Claim storm through the HTTP API: 200 users create a workspace from the same preset at
//! once while its pool holds 50 ready prebuilds. Exactly 50 claims, 150 fresh builds, every
//! request answered 201, no workspace handed to two users, and every workspace's owner is
//! the user it was answered to.

use poolkeeper_tests::seed;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::StreamExt;
use poolkeeper::api::{router, ApiState};
use poolkeeper::db::enums::{BuildReason, UserRole};
use poolkeeper::db::pool::{self, PoolConfig};
use poolkeeper::db::schema::{presets, templates, workspace_builds, workspaces};
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::db::PREBUILDS_USER_ID;
use poolkeeper::store::auth::{create_token, create_user};
use poolkeeper::store::templates::apply;
use poolkeeper::templates_file::parse_toml;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

const EXAMPLE: &str = include_str!("../../examples/templates.toml");
const PREBUILDS: usize = 50;
const CLAIMS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_claims_on_fifty_prebuilds() {
    let db = TestDatabase::new().await;
    apply(db.pool(), &parse_toml(EXAMPLE).expect("example"), chrono::Utc::now())
        .await
        .expect("apply example");
    let mut conn = db.conn().await;
    let (preset_id, version_id, template_id): (Uuid, Uuid, Uuid) = presets::table
        .inner_join(
            templates::table
                .on(templates::active_version_id.eq(presets::template_version_id.nullable())),
        )
        .filter(presets::name.eq("small"))
        .select((presets::id, presets::template_version_id, templates::id))
        .first(&mut conn)
        .await
        .expect("preset");
    let mut prebuilds = HashSet::new();
    for i in 0..PREBUILDS {
        let created = Utc::now() - TimeDelta::seconds(3600 - i as i64);
        let seed = seed::WorkspaceSeed::prebuild(template_id, version_id, preset_id, created);
        prebuilds.insert(seed::workspace(&mut conn, seed).await);
    }
    let pool = db.pool();
    let users: Vec<(Uuid, String)> = futures_util::stream::iter(0..CLAIMS)
        .map(|i| async move {
            let name = format!("user{i}");
            let user =
                create_user(pool, &name, UserRole::Member, chrono::Utc::now()).await.expect("user");
            let (token, _) = create_token(pool, &name, "storm", TimeDelta::days(1), Utc::now())
                .await
                .expect("token");
            (user.id, token)
        })
        .buffer_unordered(6)
        .collect()
        .await;

    // The API on a pool of its own, sized like a server's (the test pool is small).
    let api_pool = pool::build(
        db.url(),
        &PoolConfig {
            max_size: 20,
            connect_timeout: Duration::from_secs(30),
            ..PoolConfig::default()
        },
    )
    .expect("pool");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router(ApiState::new(api_pool))).await });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let url = Arc::new(format!("http://{addr}/api/v1/workspaces"));
    let start = Arc::new(tokio::sync::Barrier::new(CLAIMS));
    let tasks: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, (user_id, token))| {
            let (client, url, start, token, user_id) =
                (client.clone(), url.clone(), start.clone(), token.clone(), *user_id);
            tokio::spawn(async move {
                start.wait().await;
                let body =
                    json!({"template": "python-dev", "name": format!("ws{i}"), "preset": "small"});
                let result = client.post(url.as_str()).bearer_auth(&token).json(&body).send().await;
                let outcome = match result {
                    Ok(response) => {
                        let status = response.status();
                        let text = response.text().await.unwrap_or_default();
                        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
                    }
                    Err(err) => Err(err.to_string()),
                };
                (user_id, outcome)
            })
        })
        .collect();

    let mut violations = Vec::new();
    let mut answered: HashMap<Uuid, Uuid> = HashMap::new();
    let (mut claimed, mut fresh) = (0, 0);
    for task in tasks {
        let (user_id, outcome) = task.await.expect("request task");
        let (status, body) = match outcome {
            Ok(answer) => answer,
            Err(err) => {
                violations.push(format!("user {user_id}: request error {err}"));
                continue;
            }
        };
        if status != StatusCode::CREATED {
            violations.push(format!("user {user_id}: {status} {body}"));
            continue;
        }
        let Some(id) = body["workspace"]["id"].as_str().and_then(|s| s.parse::<Uuid>().ok()) else {
            violations.push(format!("user {user_id}: no workspace id in {body}"));
            continue;
        };
        match body["claimed"].as_bool() {
            Some(true) => {
                claimed += 1;
                if !prebuilds.contains(&id) {
                    violations.push(format!("user {user_id}: claimed {id}, not a prebuild"));
                }
            }
            Some(false) => fresh += 1,
            None => violations.push(format!("user {user_id}: no claimed flag in {body}")),
        }
        if let Some(other) = answered.insert(id, user_id) {
            violations.push(format!("workspace {id} handed to {other} and {user_id}"));
        }
    }
    if (claimed, fresh) != (PREBUILDS, CLAIMS - PREBUILDS) {
        violations.push(format!("{claimed} claimed and {fresh} fresh"));
    }

    // The database agrees: every answered workspace belongs to the user it was answered to,
    // the pool is empty, and each claimed prebuild has exactly one claim build.
    let owners: Vec<(Uuid, Uuid)> = workspaces::table
        .filter(workspaces::deleted.eq(false))
        .select((workspaces::id, workspaces::owner_id))
        .load(&mut conn)
        .await
        .expect("owners");
    let owners: HashMap<Uuid, Uuid> = owners.into_iter().collect();
    for (id, user_id) in &answered {
        if owners.get(id) != Some(user_id) {
            violations
                .push(format!("workspace {id}: owner {:?}, answered to {user_id}", owners.get(id)));
        }
    }
    let left = owners.values().filter(|owner| **owner == PREBUILDS_USER_ID).count();
    if left != 0 {
        violations.push(format!("{left} prebuilds left unclaimed"));
    }
    let claim_builds: Vec<Uuid> = workspace_builds::table
        .filter(workspace_builds::reason.eq(BuildReason::Claim))
        .select(workspace_builds::workspace_id)
        .load(&mut conn)
        .await
        .expect("claim builds");
    let distinct: HashSet<_> = claim_builds.iter().collect();
    if claim_builds.len() != PREBUILDS || distinct.len() != PREBUILDS {
        violations.push(format!(
            "{} claim builds on {} workspaces, expected {PREBUILDS} on {PREBUILDS}",
            claim_builds.len(),
            distinct.len()
        ));
    }

    assert!(violations.is_empty(), "violations:\n{}", violations.join("\n"));
    println!(
        "reliability claims: requests {CLAIMS}, prebuilds {PREBUILDS}, claims {claimed}, fresh \
         {fresh}, violations: 0",
    );
}
