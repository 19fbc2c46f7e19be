//! The dashboard over real HTTP against a real PostgreSQL: signing in and out, the session
//! cookie's flags, CSRF and origin checks on every change, roles, and the lifecycle pages.
//! (The browser tests in `tests/browser` drive the same pages in Chromium.)

use poolkeeper_tests::seed;

use std::net::SocketAddr;

use chrono::{TimeDelta, Utc};
use diesel_async::RunQueryDsl;
use poolkeeper::dashboard::{router as dashboard_router, DashboardState};
use poolkeeper::db::enums::{Transition, UserRole};
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::store::auth::{create_token, create_user};
use poolkeeper::store::lifecycle::{apply_lifecycle_decision, load_lifecycle_snapshot};
use poolkeeper::store::settings::reconciliation_paused;
use poolkeeper::store::templates::apply;
use poolkeeper::templates_file::parse_toml;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use seed::WorkspaceSeed;

const EXAMPLE: &str = include_str!("../../examples/templates.toml");

struct Dashboard {
    db: TestDatabase,
    addr: SocketAddr,
    /// Follows no redirect: the tests look at each answer.
    client: reqwest::Client,
}

/// One answer: status, headers, body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    /// The CSRF token the page's forms carry.
    fn csrf(&self) -> String {
        let marker = r#"name="csrf" value=""#;
        let start = self.body.find(marker).expect("a form with a CSRF token") + marker.len();
        let end = self.body[start..].find('"').expect("end of the token") + start;
        self.body[start..end].to_owned()
    }
}

impl Dashboard {
    async fn start() -> Dashboard {
        let db = TestDatabase::new().await;
        apply(db.pool(), &parse_toml(EXAMPLE).expect("example"), Utc::now()).await.expect("apply");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = dashboard_router(DashboardState::new(db.pool().clone(), seed::CONFIG));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("client");
        Dashboard { db, addr, client }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn token(&self, name: &str, role: UserRole) -> String {
        create_user(self.db.pool(), name, role, Utc::now()).await.expect("user");
        create_token(self.db.pool(), name, "t", TimeDelta::days(1), Utc::now())
            .await
            .expect("token")
            .0
    }

    async fn answer(request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request");
        let (status, headers) = (response.status(), response.headers().clone());
        Answer { status, headers, body: response.text().await.expect("body") }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        let mut request = self.client.get(self.url(path));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        Self::answer(request).await
    }

    /// A form post from our own origin.
    async fn post(&self, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Answer {
        self.post_from(path, cookie, form, &self.origin()).await
    }

    async fn post_from(
        &self,
        path: &str,
        cookie: Option<&str>,
        form: &[(&str, &str)],
        origin: &str,
    ) -> Answer {
        let mut request = self.client.post(self.url(path)).form(form).header("origin", origin);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        Self::answer(request).await
    }

    /// Signs in with `token`; returns the `name=value` of the session cookie.
    async fn sign_in(&self, token: &str) -> String {
        let answer = self.post("/dashboard/sign-in", None, &[("token", token)]).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        assert_eq!(answer.location(), "/dashboard/pools");
        let set = answer.headers.get(SET_COOKIE).and_then(|v| v.to_str().ok()).expect("cookie");
        set.split(';').next().expect("name=value").to_owned()
    }

    async fn paused(&self) -> bool {
        let mut conn = self.db.conn().await;
        reconciliation_paused(&mut conn).await.expect("setting")
    }
}

#[tokio::test]
async fn signing_in_sets_a_strict_http_only_cookie_and_signing_out_ends_the_session() {
    let dash = Dashboard::start().await;
    let signed_out = dash.get("/dashboard/pools", None).await;
    assert_eq!(
        (signed_out.status, signed_out.location()),
        (StatusCode::SEE_OTHER, "/dashboard/sign-in")
    );
    let form = dash.get("/dashboard/sign-in", None).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains(r#"name="token""#), "{}", form.body);

    let token = dash.token("olivia", UserRole::Owner).await;
    let answer = dash.post("/dashboard/sign-in", None, &[("token", &token)]).await;
    let set = answer.headers.get(SET_COOKIE).and_then(|v| v.to_str().ok()).expect("cookie");
    for flag in ["pk_session=pks_", "; Path=/", "; HttpOnly", "; SameSite=Strict", "; Max-Age="] {
        assert!(set.contains(flag), "{flag} missing in {set}");
    }
    let cookie = set.split(';').next().expect("name=value").to_owned();

    let pools = dash.get("/dashboard/pools", Some(&cookie)).await;
    assert_eq!(pools.status, StatusCode::OK);
    assert!(pools.body.contains("olivia (owner)"), "{}", pools.body);
    assert!(pools.body.contains(r#"data-template="python-dev""#), "{}", pools.body);
    let csp = pools.headers.get("content-security-policy").and_then(|v| v.to_str().ok());
    assert!(csp.is_some_and(|csp| csp.contains("script-src 'self'")), "{csp:?}");
    assert_eq!(pools.headers.get("x-frame-options").map(|v| v.as_bytes()), Some(&b"DENY"[..]));
    assert_eq!(pools.headers.get("cache-control").map(|v| v.as_bytes()), Some(&b"no-store"[..]));

    let out = dash.post("/dashboard/sign-out", Some(&cookie), &[("csrf", &pools.csrf())]).await;
    assert_eq!((out.status, out.location()), (StatusCode::SEE_OTHER, "/dashboard/sign-in"));
    let cleared = out.headers.get(SET_COOKIE).and_then(|v| v.to_str().ok()).expect("cookie");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let after = dash.get("/dashboard/pools", Some(&cookie)).await;
    assert_eq!((after.status, after.location()), (StatusCode::SEE_OTHER, "/dashboard/sign-in"));
}

#[tokio::test]
async fn members_bad_tokens_and_empty_forms_are_refused_with_a_clear_message() {
    let dash = Dashboard::start().await;
    let member = dash.token("max", UserRole::Member).await;
    let refused = dash.post("/dashboard/sign-in", None, &[("token", &member)]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused
            .body
            .contains("max is a member: only owners and template admins may use the dashboard"),
        "{}",
        refused.body
    );
    assert!(refused.headers.get(SET_COOKIE).is_none());
    let unknown = dash.post("/dashboard/sign-in", None, &[("token", "pk_unknown")]).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert!(unknown.body.contains("token: unknown, expired or revoked token"), "{}", unknown.body);
    let empty = dash.post("/dashboard/sign-in", None, &[("token", " ")]).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert!(empty.body.contains("token: paste an API token"), "{}", empty.body);
    let missing = dash.post("/dashboard/sign-in", None, &[]).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    let forged = dash.get("/dashboard/pools", Some("pk_session=pks_forged")).await;
    assert_eq!(forged.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn every_change_needs_the_sessions_csrf_token_and_our_origin() {
    let dash = Dashboard::start().await;
    let cookie = dash.sign_in(&dash.token("olivia", UserRole::Owner).await).await;
    let csrf = dash.get("/dashboard/pools", Some(&cookie)).await.csrf();

    let without = dash.post("/dashboard/pools/pause", Some(&cookie), &[]).await;
    assert_eq!(without.status, StatusCode::FORBIDDEN);
    assert!(without.body.contains("csrf: the form"), "{}", without.body);
    let wrong = dash.post("/dashboard/pools/pause", Some(&cookie), &[("csrf", "guess")]).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let elsewhere = dash
        .post_from(
            "/dashboard/pools/pause",
            Some(&cookie),
            &[("csrf", &csrf)],
            "http://evil.example",
        )
        .await;
    assert_eq!(elsewhere.status, StatusCode::FORBIDDEN);
    assert!(elsewhere.body.contains("origin:"), "{}", elsewhere.body);
    // Another operator's session has its own token.
    let other = dash.sign_in(&dash.token("oscar", UserRole::Owner).await).await;
    let theirs = dash.post("/dashboard/pools/pause", Some(&other), &[("csrf", &csrf)]).await;
    assert_eq!(theirs.status, StatusCode::FORBIDDEN);
    let signed_out = dash.post("/dashboard/pools/pause", None, &[("csrf", &csrf)]).await;
    assert_eq!(signed_out.status, StatusCode::SEE_OTHER);
    assert!(!dash.paused().await, "no refused request paused anything");

    let paused = dash.post("/dashboard/pools/pause", Some(&cookie), &[("csrf", &csrf)]).await;
    assert_eq!(
        (paused.status, paused.location()),
        (StatusCode::SEE_OTHER, "/dashboard/pools?done=paused")
    );
    assert!(dash.paused().await);
    let page = dash.get("/dashboard/pools?done=paused", Some(&cookie)).await;
    assert!(page.body.contains("Reconciliation is paused"), "{}", page.body);
    assert!(page.body.contains(r#"class="badge paused""#), "{}", page.body);
    let resumed = dash.post("/dashboard/pools/resume", Some(&cookie), &[("csrf", &csrf)]).await;
    assert_eq!(resumed.status, StatusCode::SEE_OTHER);
    assert!(!dash.paused().await);
    let mut conn = dash.db.conn().await;
    let audited = "SELECT count(*) AS n FROM audit_log WHERE actor = 'olivia'
                   AND action IN ('prebuilds_pause', 'prebuilds_resume')";
    assert_eq!(seed::count(&mut conn, audited).await, 2, "both switches are audited as olivia");
}

#[tokio::test]
async fn template_admins_invalidate_but_neither_pause_nor_read_lifecycles() {
    let dash = Dashboard::start().await;
    let cookie = dash.sign_in(&dash.token("tara", UserRole::TemplateAdmin).await).await;
    let page = dash.get("/dashboard/pools", Some(&cookie)).await;
    assert!(page.body.contains("owners pause and resume"), "{}", page.body);
    let csrf = page.csrf();
    let pause = dash.post("/dashboard/pools/pause", Some(&cookie), &[("csrf", &csrf)]).await;
    assert_eq!(pause.status, StatusCode::FORBIDDEN);
    assert!(
        pause.body.contains("only owners may pause or resume prebuilds; tara is a template-admin"),
        "{}",
        pause.body
    );
    assert!(!dash.paused().await);

    let mut conn = dash.db.conn().await;
    let preset: String = {
        #[derive(diesel::QueryableByName)]
        struct Id {
            #[diesel(sql_type = diesel::sql_types::Text)]
            id: String,
        }
        let row: Id = diesel::sql_query("SELECT id::text AS id FROM presets WHERE name = 'small'")
            .get_result(&mut conn)
            .await
            .expect("preset");
        row.id
    };
    let path = format!("/dashboard/presets/{preset}/invalidate");
    let done = dash.post(&path, Some(&cookie), &[("csrf", &csrf)]).await;
    assert_eq!(
        (done.status, done.location()),
        (StatusCode::SEE_OTHER, "/dashboard/pools?done=invalidated")
    );
    let invalidated =
        "SELECT count(*) AS n FROM presets WHERE name = 'small' AND invalidated_at IS NOT NULL";
    assert_eq!(seed::count(&mut conn, invalidated).await, 1);
    let bad = dash
        .post("/dashboard/presets/not-a-uuid/invalidate", Some(&cookie), &[("csrf", &csrf)])
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("id: not a preset id"), "{}", bad.body);
    let unknown = format!("/dashboard/presets/{}/invalidate", uuid::Uuid::new_v4());
    assert_eq!(
        dash.post(&unknown, Some(&cookie), &[("csrf", &csrf)]).await.status,
        StatusCode::NOT_FOUND
    );

    let lifecycle = dash.get("/dashboard/lifecycle", Some(&cookie)).await;
    assert_eq!(lifecycle.status, StatusCode::FORBIDDEN);
    assert!(lifecycle.body.contains("only owners may see every workspace"), "{}", lifecycle.body);
}

#[tokio::test]
async fn the_lifecycle_page_lists_what_comes_and_a_workspace_tells_why_it_stopped() {
    let dash = Dashboard::start().await;
    let mut conn = dash.db.conn().await;
    let (template_id, version_id) = seed::template(&mut conn, "go").await;
    let alice = seed::user(&mut conn, "alice").await;
    let now = Utc::now();
    let started = now - TimeDelta::hours(2);
    let running = |at| WorkspaceSeed::owned(alice, template_id, version_id, Transition::Start, at);
    let soon = seed::workspace(&mut conn, running(started)).await;
    let stopped = seed::workspace(&mut conn, running(started)).await;
    let set_deadline = |id: uuid::Uuid, deadline: chrono::DateTime<Utc>| {
        diesel::sql_query("UPDATE workspace_builds SET deadline = $1 WHERE workspace_id = $2")
            .bind::<diesel::sql_types::Timestamptz, _>(deadline)
            .bind::<diesel::sql_types::Uuid, _>(id)
    };
    set_deadline(soon, now + TimeDelta::minutes(30)).execute(&mut conn).await.expect("deadline");
    set_deadline(stopped, now - TimeDelta::minutes(5)).execute(&mut conn).await.expect("deadline");
    // The executor stops the overdue one, as a tick would.
    let snapshot = load_lifecycle_snapshot(&mut conn, now).await.expect("snapshot");
    let fence = seed::lead(&dash.db, "lifecycle").await;
    for decision in poolkeeper_core::lifecycle::plan(now, &snapshot) {
        if decision.has_effect() {
            apply_lifecycle_decision(dash.db.pool(), &fence, now, &decision).await.expect("apply");
        }
    }

    let cookie = dash.sign_in(&dash.token("olivia", UserRole::Owner).await).await;
    let page = dash.get("/dashboard/lifecycle", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let starts_and_stops = section(&page.body, "starts-and-stops");
    assert!(
        starts_and_stops.contains(&format!(r#"data-workspace="{soon}""#)),
        "{starts_and_stops}"
    );
    assert!(starts_and_stops.contains("autostop: deadline"), "{starts_and_stops}");
    assert!(
        !starts_and_stops.contains(&stopped.to_string()),
        "the stopped one has nothing upcoming"
    );
    let recent = section(&page.body, "recent-decisions");
    assert!(recent.contains(&format!("/dashboard/workspaces/{stopped}")), "{recent}");
    assert!(recent.contains("autostop: deadline"), "{recent}");

    let story = dash.get(&format!("/dashboard/workspaces/{stopped}"), Some(&cookie)).await;
    assert_eq!(story.status, StatusCode::OK, "{}", story.body);
    let latest = section(&story.body, "latest-decision");
    assert!(latest.contains("autostop"), "{latest}");
    assert!(latest.contains("reached"), "{latest}");
    let builds = section(&story.body, "builds");
    assert!(builds.contains("stop") && builds.contains("autostop"), "{builds}");
    let audit = section(&story.body, "audit");
    assert!(audit.contains("lifecycle"), "{audit}");

    let unknown =
        dash.get(&format!("/dashboard/workspaces/{}", uuid::Uuid::new_v4()), Some(&cookie)).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let bad = dash.get("/dashboard/workspaces/nope", Some(&cookie)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("id: not a workspace id"), "{}", bad.body);
}

#[tokio::test]
async fn the_pages_script_gets_the_live_region_alone_and_the_assets_are_embedded() {
    let dash = Dashboard::start().await;
    let cookie = dash.sign_in(&dash.token("olivia", UserRole::Owner).await).await;
    let live = Dashboard::answer(
        dash.client
            .get(dash.url("/dashboard/pools"))
            .header("cookie", &cookie)
            .header("x-dashboard-live", "1"),
    )
    .await;
    assert_eq!(live.status, StatusCode::OK);
    assert!(live.body.contains(r#"data-preset="small""#), "{}", live.body);
    assert!(!live.body.contains("<html"), "only the live region: {}", live.body);
    for (asset, kind) in [("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")] {
        let answer = dash.get(&format!("/dashboard/assets/{asset}"), None).await;
        assert_eq!(answer.status, StatusCode::OK);
        let content_type = answer.headers.get("content-type").and_then(|v| v.to_str().ok());
        assert!(content_type.is_some_and(|c| c.starts_with(kind)), "{content_type:?}");
    }
    assert_eq!(dash.get("/dashboard/assets/other.js", None).await.status, StatusCode::NOT_FOUND);
}

/// The HTML of the element with `id` up to the next section.
fn section<'a>(body: &'a str, id: &str) -> &'a str {
    let start = body.find(&format!(r#"id="{id}""#)).unwrap_or_else(|| panic!("no #{id} in {body}"));
    let rest = &body[start..];
    let end = rest[1..].find("<section").map_or(rest.len(), |n| n + 1);
    &rest[..end]
}
