//! `GET /api/v1/workspaces` pages: `limit` and `after` (a keyset on creation time, then id),
//! a stable order across pages while workspaces come and go, bad parameters named, and a
//! page loaded in one query whatever its size.

use crate::api_server;
use poolkeeper_tests::seed;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use api_server::TestApi;
use chrono::{DateTime, TimeDelta, Utc};
use diesel::connection::InstrumentationEvent;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use poolkeeper::db::enums::{Transition, UserRole};
use poolkeeper::db::schema::{presets, templates, workspaces};
use poolkeeper::store::workspace_page::{list_page_on, PageRequest};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

/// The active version of the example's template.
async fn template(api: &TestApi) -> (Uuid, Uuid) {
    let mut conn = api.db.conn().await;
    presets::table
        .inner_join(
            templates::table
                .on(templates::active_version_id.eq(presets::template_version_id.nullable())),
        )
        .select((templates::id, presets::template_version_id))
        .first(&mut conn)
        .await
        .expect("the example template")
}

/// `count` started workspaces of `owner`, created from `start` on in pairs at the same
/// instant (so the id breaks the tie), oldest first.
async fn seed_workspaces(
    api: &TestApi,
    owner: Uuid,
    count: usize,
    start: DateTime<Utc>,
) -> Vec<Uuid> {
    let (template, version) = template(api).await;
    let mut conn = api.db.conn().await;
    let mut ids = Vec::new();
    for i in 0..count {
        let at = start + TimeDelta::seconds((i / 2) as i64);
        let ws = seed::WorkspaceSeed::owned(owner, template, version, Transition::Start, at);
        ids.push(seed::workspace(&mut conn, ws).await);
    }
    ids
}

fn ids(page: &Value) -> Vec<Uuid> {
    page.as_array()
        .expect("a list")
        .iter()
        .map(|w| w["id"].as_str().expect("id").parse().expect("uuid"))
        .collect()
}

/// Every page of `limit` for `token`, following `after`.
async fn all_pages(api: &TestApi, token: &str, limit: usize) -> Vec<Uuid> {
    let mut seen: Vec<Uuid> = Vec::new();
    loop {
        let after = seen.last().map(|id| format!("&after={id}")).unwrap_or_default();
        let path = format!("/api/v1/workspaces?limit={limit}{after}");
        let (status, body) = api.call(Method::GET, &path, token, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let page = ids(&body);
        assert!(page.len() <= limit);
        let last = page.len() < limit;
        seen.extend(page);
        if last {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_follow_a_stable_order_while_workspaces_come_and_go() {
    let api = TestApi::start().await;
    let (_, owner) = api.user("olga", UserRole::Owner).await;
    let (mia_id, mia) = api.user("mia", UserRole::Member).await;
    let (otto_id, _) = api.user("otto", UserRole::Member).await;
    let hour_ago = Utc::now() - TimeDelta::hours(1);
    let mut mine = seed_workspaces(&api, mia_id, 7, hour_ago).await;
    let others = seed_workspaces(&api, otto_id, 3, hour_ago).await;

    // (created_at, id) order: pairs share an instant, the id decides.
    let mut conn = api.db.conn().await;
    let expected: Vec<Uuid> = workspaces::table
        .order((workspaces::created_at, workspaces::id))
        .select(workspaces::id)
        .load(&mut conn)
        .await
        .expect("ids");
    assert_eq!(all_pages(&api, &owner, 3).await, expected, "an owner sees every workspace");
    assert_eq!(all_pages(&api, &owner, 1000).await, expected);
    mine.sort_by_key(|id| expected.iter().position(|e| e == id));
    assert_eq!(all_pages(&api, &mia, 2).await, mine, "a member sees their own");
    let (_, default_page) = api.call(Method::GET, "/api/v1/workspaces", &mia, None).await;
    assert_eq!(ids(&default_page), mine, "no limit: the default page of 100");

    // Between two pages the cursor's workspace is deleted and a new one is created: the next
    // page starts right after the cursor and the new workspace comes last.
    let (_, first) = api.call(Method::GET, "/api/v1/workspaces?limit=3", &mia, None).await;
    let cursor = ids(&first)[2];
    diesel::update(workspaces::table.find(cursor))
        .set(workspaces::deleted.eq(true))
        .execute(&mut conn)
        .await
        .expect("delete");
    let newest = seed_workspaces(&api, mia_id, 1, Utc::now()).await[0];
    let path = format!("/api/v1/workspaces?limit=100&after={cursor}");
    let (status, rest) = api.call(Method::GET, &path, &mia, None).await;
    assert_eq!(status, StatusCode::OK, "{rest}");
    let mut expected_rest = mine[3..].to_vec();
    expected_rest.push(newest);
    assert_eq!(ids(&rest), expected_rest);

    // A cursor outside the caller's listing is refused, not silently an empty page.
    let path = format!("/api/v1/workspaces?after={}", others[0]);
    let (status, body) = api.call(Method::GET, &path, &mia, None).await;
    assert_eq!(
        (status, &body["field"]),
        (StatusCode::BAD_REQUEST, &Value::from("after")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paging_parameters_are_400_naming_the_field() {
    let api = TestApi::start().await;
    let (_, token) = api.user("mia", UserRole::Member).await;
    let unknown = Uuid::new_v4();
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("limit=-1", "limit"),
        ("after=yesterday", "after"),
        (&format!("after={unknown}") as &str, "after"),
        ("page=2", "page"),
    ] {
        let path = format!("/api/v1/workspaces?{query}");
        let (status, body) = api.call(Method::GET, &path, &token, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["field"], field, "{query}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_is_one_query_whatever_its_size() {
    let api = TestApi::start().await;
    let (owner, _) = api.user("olga", UserRole::Owner).await;
    seed_workspaces(&api, owner, 60, Utc::now()).await;
    let mut conn = api.db.conn().await;
    let queries = Arc::new(AtomicUsize::new(0));
    let counter = queries.clone();
    conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
        if let InstrumentationEvent::StartQuery { .. } = event {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    for limit in [1, 10, 50] {
        queries.store(0, Ordering::SeqCst);
        let page = PageRequest { owner: None, after: None, limit };
        let views = list_page_on(&mut conn, page).await.expect("a page");
        assert_eq!(views.len(), limit as usize);
        assert!(views.iter().all(|v| v.latest_build.is_some() && v.job_status.is_some()));
        assert_eq!(AtomicUsize::load(&queries, Ordering::SeqCst), 1, "limit {limit}");
    }
    println!("workspace pages: 1, 10 and 50 workspaces with their builds, 1 query each");
}
