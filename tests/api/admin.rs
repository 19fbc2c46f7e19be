//! The admin routes over real HTTP: users (list, suspend, activate, quiet hours), tokens
//! (list, revoke) and templates (list, show). What a role may do is in `api_rbac.rs`; here,
//! what the answers hold, that bad input names its field, and that changes are audited with
//! the caller as actor.

use crate::api_server;

use api_server::TestApi;
use chrono::{TimeDelta, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use poolkeeper::db::enums::UserRole;
use poolkeeper::db::schema::audit_log;
use poolkeeper::store::auth::create_token;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn audited(api: &TestApi, action: &str) -> Vec<String> {
    let mut conn = api.db.conn().await;
    audit_log::table
        .filter(audit_log::action.eq(action))
        .order(audit_log::id)
        .select(audit_log::actor)
        .load(&mut conn)
        .await
        .expect("audit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_listed_suspended_activated_and_given_quiet_hours() {
    let api = TestApi::start().await;
    let (_, olga) = api.user("olga", UserRole::Owner).await;
    let (_, mia) = api.user("mia", UserRole::Member).await;

    let (status, body) = api.call(Method::GET, "/api/v1/users", &olga, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let names: Vec<&str> =
        body.as_array().expect("users").iter().filter_map(|u| u["username"].as_str()).collect();
    assert_eq!(names, ["mia", "olga"], "system users are not listed");

    // Quiet hours: the core's parser decides, and a refusal names the field.
    let quiet = |schedule: Value| json!({ "quiet_hours_schedule": schedule });
    for bad in ["0 2 * * 1", "CRON_TZ=Mars/Base 0 2 * * *", "0 2,3 * * *", "whenever"] {
        let (status, body) = api
            .call(Method::PUT, "/api/v1/users/me/quiet-hours", &mia, Some(quiet(bad.into())))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["field"], "quiet_hours_schedule", "{bad}: {body}");
    }
    let (status, body) = api
        .call(Method::PUT, "/api/v1/users/me/quiet-hours", &mia, Some(json!({"quiet": 1})))
        .await;
    assert_eq!((status, &body["field"]), (StatusCode::BAD_REQUEST, &json!("quiet")), "{body}");
    let berlin = "CRON_TZ=Europe/Berlin 0 2 * * *";
    let (status, body) = api
        .call(Method::PUT, "/api/v1/users/me/quiet-hours", &mia, Some(quiet(berlin.into())))
        .await;
    assert_eq!((status, &body["quiet_hours_schedule"]), (StatusCode::OK, &json!(berlin)));
    let (status, body) = api
        .call(Method::PUT, "/api/v1/users/mia/quiet-hours", &olga, Some(quiet(Value::Null)))
        .await;
    assert_eq!((status, &body["quiet_hours_schedule"]), (StatusCode::OK, &Value::Null), "{body}");
    assert_eq!(audited(&api, "user_quiet_hours").await, ["mia", "olga"]);

    // Suspension: the token stops working at once; activation brings it back.
    let (status, body) = api.call(Method::POST, "/api/v1/users/me/suspend", &olga, None).await;
    assert_eq!((status, &body["field"]), (StatusCode::CONFLICT, &json!("user")), "{body}");
    let (status, body) = api.call(Method::POST, "/api/v1/users/nobody/suspend", &olga, None).await;
    assert_eq!((status, &body["field"]), (StatusCode::NOT_FOUND, &json!("user")), "{body}");
    let (status, body) = api.call(Method::POST, "/api/v1/users/mia/suspend", &olga, None).await;
    assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("suspended")), "{body}");
    let (status, _) = api.call(Method::GET, "/api/v1/workspaces", &mia, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a suspended user's token is refused");
    let (status, body) = api.call(Method::POST, "/api/v1/users/mia/activate", &olga, None).await;
    assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("active")), "{body}");
    let (status, _) = api.call(Method::GET, "/api/v1/workspaces", &mia, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(audited(&api, "user_suspend").await, ["olga"]);
    assert_eq!(audited(&api, "user_activate").await, ["olga"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_listed_and_revoked_by_their_user_or_an_owner() {
    let api = TestApi::start().await;
    let (_, olga) = api.user("olga", UserRole::Owner).await;
    let (_, mia) = api.user("mia", UserRole::Member).await;
    let (spare, _) = create_token(api.db.pool(), "mia", "spare", TimeDelta::days(1), Utc::now())
        .await
        .expect("token");

    let (status, body) = api.call(Method::GET, "/api/v1/tokens", &mia, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let tokens = body.as_array().expect("tokens");
    let names: Vec<&str> = tokens.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["spare", "test"], "mia's own, by name");
    assert!(tokens.iter().all(|t| t.get("secret_hash").is_none() && t["username"] == "mia"));
    let spare_id = tokens[0]["id"].as_str().expect("id").to_owned();
    let (status, _) = api.call(Method::GET, "/api/v1/tokens?user=olga", &mia, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = api.call(Method::GET, "/api/v1/tokens?user=mia", &olga, None).await;
    assert_eq!((status, body.as_array().map(Vec::len)), (StatusCode::OK, Some(2)));
    let (status, body) = api.call(Method::GET, "/api/v1/tokens?user=nobody", &olga, None).await;
    assert_eq!((status, &body["field"]), (StatusCode::NOT_FOUND, &json!("user")), "{body}");
    let (status, body) = api.call(Method::GET, "/api/v1/tokens?bogus=1", &mia, None).await;
    assert_eq!((status, &body["field"]), (StatusCode::BAD_REQUEST, &json!("bogus")), "{body}");

    // Another user's token is "not found" to a member, whether or not it exists.
    let (_, olgas) = api.call(Method::GET, "/api/v1/tokens", &olga, None).await;
    let olgas_id = olgas[0]["id"].as_str().expect("id").to_owned();
    let path = format!("/api/v1/tokens/{olgas_id}");
    let (status, _) = api.call(Method::DELETE, &path, &mia, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = api.call(Method::DELETE, "/api/v1/tokens/xyz", &mia, None).await;
    assert_eq!((status, &body["field"]), (StatusCode::BAD_REQUEST, &json!("id")), "{body}");

    let (status, _) = api.call(Method::GET, "/api/v1/tokens", &spare, None).await;
    assert_eq!(status, StatusCode::OK, "the spare token works");
    let path = format!("/api/v1/tokens/{spare_id}");
    let (status, body) = api.call(Method::DELETE, &path, &mia, None).await;
    assert_eq!((status, &body["name"]), (StatusCode::OK, &json!("spare")), "{body}");
    let (status, _) = api.call(Method::GET, "/api/v1/tokens", &spare, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked at once");
    let (status, _) = api.call(Method::DELETE, &path, &mia, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "already revoked");
    assert_eq!(audited(&api, "token_revoke").await, ["mia"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_are_listed_and_shown() {
    let api = TestApi::start().await;
    let (_, mia) = api.user("mia", UserRole::Member).await;
    let (status, body) = api.call(Method::GET, "/api/v1/templates", &mia, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body[0]["name"], "python-dev");
    assert_eq!((&body[0]["organization"], &body[0]["presets"]), (&json!("default"), &json!(2)));
    assert_eq!(body[0]["active_version"], "v1");

    let (status, body) =
        api.call(Method::GET, "/api/v1/templates/default/python-dev", &mia, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let presets = body["active_version"]["presets"].as_array().expect("presets");
    let names: Vec<&str> = presets.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["large", "small"]);
    let small = &presets[1];
    assert!(small["schedules"].as_array().is_some_and(|s| !s.is_empty()), "{small}");
    let (status, _) = api.call(Method::GET, "/api/v1/templates/default/nope", &mia, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
