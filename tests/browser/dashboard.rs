//! Sign in, watch the demo template's pools fill without reloading, pause and resume,
//! invalidate a preset, sign out; screenshots at 1280 px and at a phone's width are saved
//! under `target/browser-artifacts/`.

use poolkeeper_tests::seed;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use poolkeeper::daemon::PrebuildReconciler;
use poolkeeper::dashboard::{router, DashboardState};
use poolkeeper::db::enums::UserRole;
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::store::auth::{create_token, create_user};
use poolkeeper::store::settings::reconciliation_paused;
use poolkeeper::store::templates::apply;
use poolkeeper::templates_file::parse_toml;
use serde_json::json;

use super::webdriver::{browser_programs, Driver};

const EXAMPLE: &str = include_str!("../../examples/templates.toml");
const WAIT: Duration = Duration::from_secs(30);

/// Where the screenshots go: the target folder, not the repository.
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("browser-artifacts")
}

/// Every pool of the demo template is full (eligible = desired > 0) on the page as shown.
const POOLS_FULL: &str = r#"
    const rows = Array.from(document.querySelectorAll('tr[data-template="python-dev"][data-active="true"]'));
    const figures = rows.map(r => [r.dataset.preset,
        Number(r.querySelector('td.desired').textContent),
        Number(r.querySelector('td.eligible').textContent)]);
    return rows.length > 0 && figures.every(([_, d, e]) => d > 0 && e === d) ? true : figures;"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_watches_the_pools_fill_pauses_resumes_and_invalidates() {
    let Some((driver_program, browser_program)) = browser_programs() else {
        println!("skipped: install chromium chromium-driver (Debian) to run the browser tests");
        return;
    };
    let db = TestDatabase::new().await;
    apply(db.pool(), &parse_toml(EXAMPLE).expect("example"), Utc::now()).await.expect("apply");
    create_user(db.pool(), "olivia", UserRole::Owner, Utc::now()).await.expect("owner");
    let (token, _) = create_token(db.pool(), "olivia", "browser", TimeDelta::days(1), Utc::now())
        .await
        .expect("token");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = router(DashboardState::new(db.pool().clone(), seed::CONFIG));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // The daemon's prebuild loop, and a provisioner that builds every job at once.
    let stop = Arc::new(AtomicBool::new(false));
    let machinery = {
        let (pool, url, stop) = (db.pool().clone(), db.url().to_owned(), stop.clone());
        tokio::spawn(async move {
            let metrics = Arc::new(poolkeeper::telemetry::Metrics::new());
            let mut reconciler =
                PrebuildReconciler::new(pool.clone(), &url, seed::CONFIG, 2).with_metrics(metrics);
            let mut conn = pool.get().await.expect("connection");
            while !stop.load(Ordering::Relaxed) {
                let now = Utc::now();
                if let Err(err) = reconciler.cycle(now).await {
                    eprintln!("cycle failed: {err}");
                }
                seed::complete_pending_jobs(&mut conn, now).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };

    let driver = Driver::start(&driver_program).await;
    let browser = driver.session(&browser_program, 1280, 900).await;

    // Signed out, the pools send the browser to the sign-in form.
    browser.goto(&format!("{base}/dashboard/pools")).await;
    assert!(browser.current_url().await.ends_with("/dashboard/sign-in"), "signed out");
    browser.type_into("#token", &token).await;
    browser.click("#sign-in").await;
    browser
        .wait_for(
            "the pools page after signing in",
            WAIT,
            "return location.pathname === '/dashboard/pools' ? true : [location.href, document.body.innerText]",
        )
        .await;
    let operator =
        browser.run("return document.getElementById('operator').textContent", json!([])).await;
    assert_eq!(operator, json!("olivia (owner)"));

    // The pools fill while the page stays open: the live region refreshes in place.
    browser.wait_for("the pools to fill", WAIT, POOLS_FULL).await;
    browser
        .wait_for(
            "a live refresh",
            WAIT,
            "return Number(document.body.getAttribute('data-refreshes') || 0) > 0",
        )
        .await;
    let reloads =
        browser.run("return performance.getEntriesByType('navigation').length", json!([])).await;
    assert_eq!(reloads, json!(1), "no reload: one navigation");

    browser.click("#pause").await;
    browser
        .wait_for(
            "the paused state",
            WAIT,
            "const s = document.getElementById('reconciliation'); return s !== null && s.dataset.paused === 'true'",
        )
        .await;
    let paused = {
        let mut conn = db.conn().await;
        reconciliation_paused(&mut conn).await.expect("setting")
    };
    assert!(paused, "the pause reached the database");
    browser.click("#resume").await;
    browser
        .wait_for(
            "the running state",
            WAIT,
            "const s = document.getElementById('reconciliation'); return s !== null && s.dataset.paused === 'false'",
        )
        .await;
    let mut conn = db.conn().await;
    assert!(!reconciliation_paused(&mut conn).await.expect("setting"), "resumed");

    browser.click(r#"button.invalidate[data-preset="small"]"#).await;
    browser
        .wait_for(
            "the invalidation's confirmation",
            WAIT,
            "const d = document.getElementById('done'); return d !== null && d.textContent.includes('invalidated')",
        )
        .await;
    let invalidated =
        "SELECT count(*) AS n FROM presets WHERE name = 'small' AND invalidated_at IS NOT NULL";
    assert_eq!(seed::count(&mut conn, invalidated).await, 1);
    // The invalidated prebuilds are replaced and the pool is full again.
    browser.wait_for("the pools to refill", WAIT, POOLS_FULL).await;

    browser
        .wait_for(
            "a chart per pool",
            WAIT,
            "return document.querySelectorAll('tr[data-template=\"python-dev\"] svg.chart polyline.eligible').length > 0",
        )
        .await;
    let dir = artifacts();
    browser
        .wait_for(
            "no sideways scrolling at 1280 px",
            WAIT,
            "return document.documentElement.scrollWidth <= window.innerWidth + 1 ? true : [document.documentElement.scrollWidth, window.innerWidth]",
        )
        .await;
    browser.screenshot(&dir.join("dashboard-pools-1280.png")).await;
    // A phone's width: rows become cards and nothing overflows sideways.
    browser.resize(390, 844).await;
    browser
        .wait_for(
            "no sideways scrolling at 390 px",
            WAIT,
            "return document.documentElement.scrollWidth <= window.innerWidth + 1 ? true : [document.documentElement.scrollWidth, window.innerWidth]",
        )
        .await;
    browser.screenshot(&dir.join("dashboard-pools-phone.png")).await;
    println!("browser: screenshots in {}", dir.display());

    let on_sign_in = "return location.pathname === '/dashboard/sign-in' ? true : location.href";
    browser.click("#sign-out").await;
    browser.wait_for("the sign-in form after signing out", WAIT, on_sign_in).await;
    browser.goto(&format!("{base}/dashboard/pools")).await;
    browser.wait_for("the sign-in form: the session is over", WAIT, on_sign_in).await;

    browser.close().await;
    stop.store(true, Ordering::Relaxed);
    machinery.await.expect("machinery");
    server.abort();
}
