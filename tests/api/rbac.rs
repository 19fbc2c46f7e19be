//! RBAC as a table: every caller (owner, template admin, the member who owns the workspace,
//! another member, anonymous, an agent token) against every route of the API, generated from
//! one matrix, each cell asserting its status code. Each workspace cell runs on a fresh
//! target in the state the route acts on, so a cell's outcome never depends on another's.

use crate::api_server;
use poolkeeper_tests::seed;

use api_server::TestApi as Api;
use chrono::{TimeDelta, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use poolkeeper::api::routes;
use poolkeeper::db::enums::{Transition, UserRole};
use poolkeeper::db::schema::{presets, templates};
use poolkeeper::store::auth::create_token;
use poolkeeper::store::tokens::list_tokens;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

const EXAMPLE: &str = include_str!("../../examples/templates.toml");

/// The callers, in the matrix's column order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Owner,
    TemplateAdmin,
    /// The member who owns the target workspace.
    Member,
    /// A member who does not.
    OtherMember,
    Anonymous,
    /// The bearer token of the target workspace's agent.
    Agent,
}

const CALLERS: [Caller; 6] = [
    Caller::Owner,
    Caller::TemplateAdmin,
    Caller::Member,
    Caller::OtherMember,
    Caller::Anonymous,
    Caller::Agent,
];

/// What a cell acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Nothing in particular (lists, settings, templates).
    None,
    /// The member's workspace, started (build #1 succeeded, agent ready).
    Running,
    /// The member's workspace, stopped.
    Stopped,
    /// A ready prebuilt workspace (owned by the system user), started.
    PrebuiltRunning,
    /// A prebuilt workspace, stopped.
    PrebuiltStopped,
    /// A preset (`{id}` is the preset's).
    Preset,
    /// A fresh member (`{user}` is the username).
    User,
    /// The caller itself (`{user}` is `me`).
    Me,
    /// A fresh token of a fresh member (`{id}` is the token's).
    OthersToken,
    /// A fresh, second token of the caller (`{id}` is the token's).
    OwnToken,
}

struct Row {
    method: Method,
    /// Axum syntax: `{id}` is the target (workspace or preset), `{agent}` the workspace's
    /// agent.
    path: &'static str,
    target: Target,
    body: fn() -> Option<Value>,
    /// Status per caller, in [`CALLERS`] order.
    expected: [u16; 6],
}

fn row(
    method: Method,
    path: &'static str,
    target: Target,
    body: fn() -> Option<Value>,
    expected: [u16; 6],
) -> Row {
    Row { method, path, target, body, expected }
}

fn no_body() -> Option<Value> {
    None
}

/// The matrix. Columns: owner, template admin, member (owns it), other member, anonymous,
/// agent token.
fn matrix() -> Vec<Row> {
    use Target::*;
    let (get, post, put, delete) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
    vec![
        row(
            post.clone(),
            "/api/v1/workspaces",
            None,
            || {
                Some(
                    json!({"template": "python-dev", "name": format!("w{}", Uuid::new_v4().simple())}),
                )
            },
            [201, 201, 201, 201, 401, 401],
        ),
        row(get.clone(), "/api/v1/workspaces", None, no_body, [200, 200, 200, 200, 401, 401]),
        row(
            get.clone(),
            "/api/v1/workspaces/{id}",
            Running,
            no_body,
            [200, 404, 200, 404, 401, 401],
        ),
        row(
            get.clone(),
            "/api/v1/workspaces/{id}",
            PrebuiltRunning,
            no_body,
            [200, 200, 404, 404, 401, 401],
        ),
        row(
            post.clone(),
            "/api/v1/workspaces/{id}/start",
            Stopped,
            no_body,
            [202, 404, 202, 404, 401, 401],
        ),
        row(
            post.clone(),
            "/api/v1/workspaces/{id}/start",
            PrebuiltStopped,
            no_body,
            [202, 403, 404, 404, 401, 401],
        ),
        row(
            post.clone(),
            "/api/v1/workspaces/{id}/stop",
            Running,
            no_body,
            [202, 404, 202, 404, 401, 401],
        ),
        row(
            post.clone(),
            "/api/v1/workspaces/{id}/stop",
            PrebuiltRunning,
            no_body,
            [202, 403, 404, 404, 401, 401],
        ),
        row(
            delete.clone(),
            "/api/v1/workspaces/{id}",
            Running,
            no_body,
            [202, 404, 202, 404, 401, 401],
        ),
        row(
            delete.clone(),
            "/api/v1/workspaces/{id}",
            PrebuiltRunning,
            no_body,
            [202, 202, 404, 404, 401, 401],
        ),
        row(
            put.clone(),
            "/api/v1/workspaces/{id}/autostart",
            Running,
            || Some(json!({"schedule": "CRON_TZ=UTC 0 9 * * 1-5"})),
            [200, 404, 200, 404, 401, 401],
        ),
        row(
            put.clone(),
            "/api/v1/workspaces/{id}/autostart",
            PrebuiltRunning,
            || Some(json!({"schedule": "CRON_TZ=UTC 0 9 * * 1-5"})),
            [200, 403, 404, 404, 401, 401],
        ),
        row(
            put.clone(),
            "/api/v1/workspaces/{id}/ttl",
            Running,
            || Some(json!({"ttl_secs": 600})),
            [200, 404, 200, 404, 401, 401],
        ),
        row(
            put.clone(),
            "/api/v1/workspaces/{id}/ttl",
            PrebuiltRunning,
            || Some(json!({"ttl_secs": 600})),
            [200, 403, 404, 404, 401, 401],
        ),
        row(
            post.clone(),
            "/api/v1/workspaces/{id}/activity",
            Running,
            no_body,
            [200, 404, 200, 404, 401, 401],
        ),
        row(
            post.clone(),
            "/api/v1/workspaces/{id}/activity",
            PrebuiltRunning,
            no_body,
            [200, 403, 404, 404, 401, 401],
        ),
        row(
            post.clone(),
            "/api/v1/workspaces/{id}/agents/{agent}/token",
            Running,
            no_body,
            [201, 404, 201, 404, 401, 401],
        ),
        row(
            post.clone(),
            "/api/v1/workspaces/{id}/agents/{agent}/token",
            PrebuiltRunning,
            no_body,
            [201, 403, 404, 404, 401, 401],
        ),
        // Agent token auth: a person's bearer token is no agent token.
        row(
            post.clone(),
            "/api/v1/workspaces/{id}/agents/{agent}/lifecycle",
            Running,
            || Some(json!({"state": "ready"})),
            [401, 401, 401, 401, 401, 200],
        ),
        row(get.clone(), "/api/v1/prebuilds/status", None, no_body, [200, 200, 200, 200, 401, 401]),
        row(
            put.clone(),
            "/api/v1/prebuilds/settings",
            None,
            || Some(json!({"reconciliation_paused": false})),
            [200, 403, 403, 403, 401, 401],
        ),
        row(
            post.clone(),
            "/api/v1/presets/{id}/invalidate",
            Preset,
            no_body,
            [200, 200, 403, 403, 401, 401],
        ),
        row(
            put.clone(),
            "/api/v1/templates/{org}/{name}",
            None,
            no_body,
            [200, 200, 403, 403, 401, 401],
        ),
        row(get.clone(), "/api/v1/audit", None, no_body, [200, 403, 403, 403, 401, 401]),
        row(get.clone(), "/api/v1/templates", None, no_body, [200, 200, 200, 200, 401, 401]),
        row(
            get.clone(),
            "/api/v1/templates/{org}/{name}",
            None,
            no_body,
            [200, 200, 200, 200, 401, 401],
        ),
        row(get.clone(), "/api/v1/users", None, no_body, [200, 403, 403, 403, 401, 401]),
        row(
            post.clone(),
            "/api/v1/users/{user}/suspend",
            User,
            no_body,
            [200, 403, 403, 403, 401, 401],
        ),
        row(
            post.clone(),
            "/api/v1/users/{user}/activate",
            User,
            no_body,
            [200, 403, 403, 403, 401, 401],
        ),
        row(
            put.clone(),
            "/api/v1/users/{user}/quiet-hours",
            User,
            || Some(json!({"quiet_hours_schedule": "CRON_TZ=Europe/Berlin 0 2 * * *"})),
            [200, 403, 403, 403, 401, 401],
        ),
        // Every user sets their own.
        row(
            put.clone(),
            "/api/v1/users/{user}/quiet-hours",
            Me,
            || Some(json!({"quiet_hours_schedule": "CRON_TZ=Europe/Berlin 0 2 * * *"})),
            [200, 200, 200, 200, 401, 401],
        ),
        row(get.clone(), "/api/v1/tokens", None, no_body, [200, 200, 200, 200, 401, 401]),
        // Another user's token is not found, except by owners.
        row(
            delete.clone(),
            "/api/v1/tokens/{id}",
            OthersToken,
            no_body,
            [200, 404, 404, 404, 401, 401],
        ),
        row(
            delete.clone(),
            "/api/v1/tokens/{id}",
            OwnToken,
            no_body,
            [200, 200, 200, 200, 401, 401],
        ),
        row(
            get.clone(),
            "/api/v1/users/me/notification-preferences",
            None,
            no_body,
            [200, 200, 200, 200, 401, 401],
        ),
        row(
            put.clone(),
            "/api/v1/users/me/notification-preferences",
            None,
            || Some(json!({"preferences": {"preset_hard_limited": false}})),
            [200, 200, 200, 200, 401, 401],
        ),
        row(get.clone(), "/api/v1/openapi.json", None, no_body, [200, 200, 200, 200, 200, 200]),
        row(get, "/api/v1/buildinfo", None, no_body, [200, 200, 200, 200, 200, 200]),
    ]
}

struct Fixture {
    api: Api,
    tokens: [Option<String>; 4],
    member_id: Uuid,
    template_id: Uuid,
    version_id: Uuid,
    preset_id: Uuid,
}

impl Fixture {
    async fn start() -> Fixture {
        let api = Api::start().await;
        let (_, owner) = api.user("olivia", UserRole::Owner).await;
        let (_, admin) = api.user("adam", UserRole::TemplateAdmin).await;
        let (member_id, member) = api.user("mia", UserRole::Member).await;
        let (_, other) = api.user("otto", UserRole::Member).await;
        let (template_id, version_id, preset_id): (Uuid, Uuid, Uuid) =
            {
                let mut conn = api.db.conn().await;
                presets::table
                    .inner_join(templates::table.on(
                        templates::active_version_id.eq(presets::template_version_id.nullable()),
                    ))
                    .filter(presets::name.eq("small"))
                    .select((templates::id, presets::template_version_id, presets::id))
                    .first(&mut conn)
                    .await
                    .expect("preset")
            };
        Fixture {
            api,
            tokens: [Some(owner), Some(admin), Some(member), Some(other)],
            member_id,
            template_id,
            version_id,
            preset_id,
        }
    }

    /// A fresh workspace in the target's state, with its agent `main` ready.
    async fn target(&self, target: Target) -> Option<Uuid> {
        let mut conn = self.api.db.conn().await;
        let now = Utc::now();
        let seed = |transition| match target {
            Target::Running | Target::Stopped => seed::WorkspaceSeed::owned(
                self.member_id,
                self.template_id,
                self.version_id,
                transition,
                now,
            ),
            _ => seed::WorkspaceSeed {
                transition,
                ..seed::WorkspaceSeed::prebuild(
                    self.template_id,
                    self.version_id,
                    self.preset_id,
                    now,
                )
            },
        };
        match target {
            Target::None | Target::User | Target::Me | Target::OwnToken => return None,
            Target::Preset => return Some(self.preset_id),
            Target::OthersToken => {
                let name = self.fresh_user().await;
                return Some(self.token_of(&name).await);
            }
            _ => {}
        }
        let id = seed::workspace(&mut conn, seed(Transition::Start)).await;
        if matches!(target, Target::Stopped | Target::PrebuiltStopped) {
            seed::build(&mut conn, id, 2, &seed(Transition::Stop)).await;
        }
        Some(id)
    }

    /// A fresh member; its username.
    async fn fresh_user(&self) -> String {
        let name = format!("u{}", Uuid::new_v4().simple());
        self.api.user(&name, UserRole::Member).await;
        name
    }

    /// The id of a new token of `username`.
    async fn token_of(&self, username: &str) -> Uuid {
        let name = format!("t{}", Uuid::new_v4().simple());
        create_token(self.api.db.pool(), username, &name, TimeDelta::days(1), Utc::now())
            .await
            .expect("token");
        let tokens = list_tokens(self.api.db.pool(), None).await.expect("tokens");
        tokens.into_iter().find(|t| t.name == name).expect("the new token").id
    }

    /// The bearer of `caller` for a cell on `workspace` (an agent's token is minted by an
    /// owner for the workspace's agent).
    async fn bearer(&self, caller: Caller, workspace: Option<Uuid>) -> Option<String> {
        match caller {
            Caller::Anonymous => None,
            Caller::Agent => {
                let path = match workspace {
                    Some(id) => format!("/api/v1/workspaces/{id}/agents/main/token"),
                    None => {
                        // Any agent's token: of a running workspace made for it.
                        let id = self.target(Target::Running).await.expect("a workspace");
                        format!("/api/v1/workspaces/{id}/agents/main/token")
                    }
                };
                let owner = self.tokens[0].as_deref().expect("owner token");
                let (status, body) = self.api.call(Method::POST, &path, owner, None).await;
                assert_eq!(status, StatusCode::CREATED, "mint an agent token: {body}");
                Some(body["token"].as_str().expect("agent token").to_owned())
            }
            other => {
                let i = CALLERS.iter().position(|c| *c == other).expect("a caller");
                self.tokens[i].clone()
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_against_every_route() {
    let fixture = Fixture::start().await;
    let matrix = matrix();
    // The matrix covers every route of the router.
    let mut uncovered: Vec<String> = routes()
        .iter()
        .filter(|route| {
            !matrix.iter().any(|row| {
                row.method.as_str().eq_ignore_ascii_case(route.method) && row.path == route.path
            })
        })
        .map(|route| format!("{} {}", route.method, route.path))
        .collect();
    uncovered.sort();
    assert!(uncovered.is_empty(), "routes missing from the matrix: {uncovered:?}");

    // Every status a cell meets is one the OpenAPI document declares for its operation.
    let doc = poolkeeper::api::openapi_document();
    let mut undocumented = Vec::new();
    let mut mismatches = Vec::new();
    let mut cells = 0;
    for row in &matrix {
        for (caller, expected) in CALLERS.iter().zip(row.expected) {
            let mut target = fixture.target(row.target).await;
            let workspace = target.filter(|_| {
                !matches!(row.target, Target::Preset | Target::OthersToken | Target::OwnToken)
            });
            let bearer = fixture.bearer(*caller, workspace).await;
            if row.target == Target::OwnToken {
                let name = match caller {
                    Caller::Owner => "olivia",
                    Caller::TemplateAdmin => "adam",
                    Caller::OtherMember => "otto",
                    Caller::Member | Caller::Anonymous | Caller::Agent => "mia",
                };
                target = Some(fixture.token_of(name).await);
            }
            let user = match row.target {
                Target::User => fixture.fresh_user().await,
                _ => "me".to_owned(),
            };
            let path = row
                .path
                .replace("{id}", &target.map(|id| id.to_string()).unwrap_or_default())
                .replace("{user}", &user)
                .replace("{agent}", "main")
                .replace("{org}", "default")
                .replace("{name}", "python-dev");
            let (status, body) = if row.path.starts_with("/api/v1/templates/") {
                let request = fixture
                    .api
                    .client
                    .request(row.method.clone(), fixture.api.url(&path))
                    .header("content-type", "application/toml")
                    .body(EXAMPLE);
                let request = match &bearer {
                    Some(token) => request.bearer_auth(token),
                    None => request,
                };
                let response = request.send().await.expect("request");
                let status = response.status();
                (status, Value::String(response.text().await.expect("body")))
            } else {
                fixture
                    .api
                    .call_as(row.method.clone(), &path, bearer.as_deref(), (row.body)())
                    .await
            };
            cells += 1;
            let documented = &doc["paths"][row.path][row.method.as_str().to_lowercase()]
                ["responses"][status.as_str()];
            if !documented.is_object() {
                undocumented.push(format!("{} {}: {status}", row.method, row.path));
            }
            if status.as_u16() != expected {
                mismatches.push(format!(
                    "{caller:?} {} {} ({:?}): {status}, expected {expected}: {body}",
                    row.method, row.path, row.target
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{} cells differ:\n{}", mismatches.len(), mismatches.join("\n"));
    undocumented.sort();
    undocumented.dedup();
    assert!(
        undocumented.is_empty(),
        "statuses missing from the OpenAPI document: {undocumented:#?}"
    );
    println!(
        "api rbac: {cells} cells ({} rows x {} callers, every route covered), violations: 0",
        matrix.len(),
        CALLERS.len()
    );
}
