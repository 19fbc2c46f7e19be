//! `/metrics` through real HTTP while the daemon's engines run against a real PostgreSQL:
//! pool gauges after a fill, totals after a claim, the hard limit after three failures, the
//! pause switch, lifecycle transitions, series of a deleted template gone, the API's claim
//! batches; and the whole exposition parses as Prometheus text.

use poolkeeper_tests::seed;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use poolkeeper::api::ApiState;
use poolkeeper::daemon::http::{base_router, HttpState};
use poolkeeper::daemon::{CycleOutcome, LifecycleExecutor, PrebuildReconciler};
use poolkeeper::db::enums::UserRole;
use poolkeeper::db::schema::template_versions;
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::provisioner::context::load_context;
use poolkeeper::provisioner::{
    acquire_next_job, complete_job, Backends, CancellationToken, JobResult,
};
use poolkeeper::store::auth::create_user;
use poolkeeper::store::claim::{claim_or_create, ClaimRequest};
use poolkeeper::store::settings::set_reconciliation_paused;
use poolkeeper::telemetry::Metrics;
use prometheus_parse::{LineInfo, SampleType, Scrape, Value};
use seed::{t, CONFIG};

/// One scrape: every sample by (name, sorted labels), and the declared family types.
struct Scraped {
    text: String,
    values: HashMap<(String, BTreeMap<String, String>), f64>,
    types: HashMap<String, SampleType>,
}

impl Scraped {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.values.get(&(name.to_owned(), labels)).copied()
    }

    fn preset(&self, name: &str, template: &str, preset: &str) -> Option<f64> {
        self.get(name, &[("organization", "default"), ("template", template), ("preset", preset)])
    }

    /// Whether any sample carries `template`.
    fn mentions_template(&self, template: &str) -> bool {
        self.text.lines().any(|l| l.contains(&format!("template=\"{template}\"")))
    }
}

struct Server {
    base: String,
    client: reqwest::Client,
}

impl Server {
    async fn start(state: HttpState) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, base_router(state)).await });
        let client =
            reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        Server { base: format!("http://{addr}"), client }
    }

    async fn scrape(&self) -> Scraped {
        let response =
            self.client.get(format!("{}/metrics", self.base)).send().await.expect("GET /metrics");
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let text = response.text().await.expect("body");
        parse(text)
    }
}

/// Parses the whole exposition: every line must be a comment or a sample (the parser
/// silently skips what it cannot read, so that is checked line by line first).
fn parse(text: String) -> Scraped {
    let mut types = HashMap::new();
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Type { metric_name, metric_alias, sample_type } => {
                types.insert(metric_alias.unwrap_or(metric_name), sample_type);
            }
            LineInfo::Doc { .. } | LineInfo::Sample { .. } | LineInfo::Empty => {}
            LineInfo::Ignored => assert_eq!(line, "# EOF", "unparsable line {line:?}"),
        }
    }
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = Scrape::parse(lines).expect("Prometheus text");
    let mut values = HashMap::new();
    for sample in scrape.samples {
        let labels: BTreeMap<String, String> =
            sample.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let value = match sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            // A histogram reads as its sample count (its `+Inf` bucket).
            Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => panic!("no summaries are exported"),
        };
        let key = (sample.metric.clone(), labels);
        assert!(values.insert(key, value).is_none(), "duplicate series {}", sample.metric);
    }
    Scraped { text, values, types }
}

/// Every pending job fails (start builds get no agent).
async fn fail_pending_jobs(conn: &mut diesel_async::AsyncPgConnection, at: &str) {
    diesel::sql_query(
        "UPDATE provisioner_jobs SET status = 'failed', started_at = $1, completed_at = $1,
                error = 'boom' WHERE status = 'pending'",
    )
    .bind::<diesel::sql_types::Timestamptz, _>(t(at))
    .execute(conn)
    .await
    .expect("fail jobs");
}

fn ran(outcome: CycleOutcome) {
    assert!(matches!(outcome, CycleOutcome::Ran(s) if s.failures == 0), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_pools_over_real_http() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let metrics = Arc::new(Metrics::new());
    metrics.watch_db_pool(db.pool().clone());
    let state = HttpState::with_metrics(metrics.clone());
    let server = Server::start(state).await;
    let mut reconciler = PrebuildReconciler::new(db.pool().clone(), db.url(), CONFIG, 2)
        .with_metrics(metrics.clone());
    let now = t("2025-06-02T09:00:00Z");

    // Before any cycle: descriptors, no pool series.
    let first = server.scrape().await;
    assert!(first.text.contains("# TYPE poolkeeper_prebuilds_desired gauge"));
    assert_eq!(first.get("poolkeeper_reconciliation_paused", &[]), None);

    let (go, go_v1) = seed::template(&mut conn, "go").await;
    let small = seed::preset(&mut conn, go_v1, "small", 3).await;
    ran(reconciler.cycle(now).await.expect("cycle"));
    seed::complete_pending_jobs(&mut conn, now).await;
    ran(reconciler.cycle(now).await.expect("cycle"));
    let filled = server.scrape().await;
    for name in ["desired", "running", "eligible", "created_total"] {
        let metric = format!("poolkeeper_prebuilds_{name}");
        assert_eq!(filled.preset(&metric, "go", "small"), Some(3.0), "{metric}");
    }
    let zeros = [
        "failed_total",
        "claimed_total",
        "resource_replacements_total",
        "hard_limited",
        "validation_failed",
    ];
    for name in zeros {
        let metric = format!("poolkeeper_prebuilds_{name}");
        assert_eq!(filled.preset(&metric, "go", "small"), Some(0.0), "{metric}");
    }
    assert_eq!(filled.get("poolkeeper_reconciliation_paused", &[]), Some(0.0));
    assert_eq!(filled.get("poolkeeper_jobs", &[("status", "pending")]), Some(0.0));
    assert_eq!(filled.get("poolkeeper_jobs", &[("status", "running")]), Some(0.0));
    assert_eq!(filled.get("poolkeeper_jobs", &[("status", "succeeded")]), None, "live only");
    assert_eq!(filled.get("poolkeeper_job_queue_depth", &[]), Some(0.0));
    assert_eq!(filled.get("poolkeeper_reconciliation_cycle_duration_seconds", &[]), Some(2.0));
    assert!(filled.get("poolkeeper_db_pool_connections_in_use", &[]).is_some());

    // A claim through the store: the totals count it, the pool refills.
    let alice = seed::user(&mut conn, "alice").await;
    let request = ClaimRequest {
        user_id: alice,
        template_id: go,
        preset_id: Some(small),
        name: "mine".to_owned(),
        autostart_schedule: None,
        ttl_secs: None,
        parameters: BTreeMap::new(),
    };
    let outcome = claim_or_create(db.pool(), now, &request).await.expect("claim");
    assert!(outcome.claimed);
    ran(reconciler.cycle(now).await.expect("cycle"));
    let claimed = server.scrape().await;
    assert_eq!(claimed.preset("poolkeeper_prebuilds_claimed_total", "go", "small"), Some(1.0));
    assert_eq!(claimed.preset("poolkeeper_prebuilds_created_total", "go", "small"), Some(4.0));
    assert_eq!(claimed.get("poolkeeper_job_queue_depth", &[]), Some(2.0), "claim + refill");
    seed::complete_pending_jobs(&mut conn, now).await;

    // Three failed builds hard-limit a second template's preset.
    let (_, rust_v1) = seed::template(&mut conn, "rust").await;
    seed::preset(&mut conn, rust_v1, "tiny", 3).await;
    ran(reconciler.cycle(now).await.expect("cycle"));
    fail_pending_jobs(&mut conn, "2025-06-02T09:01:00Z").await;
    ran(reconciler.cycle(t("2025-06-02T09:02:00Z")).await.expect("cycle"));
    let limited = server.scrape().await;
    assert_eq!(limited.preset("poolkeeper_prebuilds_hard_limited", "rust", "tiny"), Some(1.0));
    assert_eq!(limited.preset("poolkeeper_prebuilds_failed_total", "rust", "tiny"), Some(3.0));
    assert_eq!(limited.preset("poolkeeper_prebuilds_hard_limited", "go", "small"), Some(0.0));
    assert_eq!(limited.get("poolkeeper_jobs", &[("status", "failed")]), None, "live only");

    // Paused: the switch shows, the pool series stay current.
    set_reconciliation_paused(&mut conn, true, chrono::Utc::now()).await.expect("pause");
    let paused_at = t("2025-06-02T09:03:00Z");
    assert_eq!(reconciler.cycle(paused_at).await.expect("cycle"), CycleOutcome::Paused);
    let paused = server.scrape().await;
    assert_eq!(paused.get("poolkeeper_reconciliation_paused", &[]), Some(1.0));
    assert_eq!(paused.preset("poolkeeper_prebuilds_running", "go", "small"), Some(3.0));
    set_reconciliation_paused(&mut conn, false, chrono::Utc::now()).await.expect("resume");

    // A deleted template's series disappear at the next cycle; the others stay.
    diesel::sql_query("UPDATE templates SET deleted = true WHERE name = 'rust'")
        .execute(&mut conn)
        .await
        .expect("delete template");
    assert!(paused.mentions_template("rust"));
    ran(reconciler.cycle(t("2025-06-02T09:04:00Z")).await.expect("cycle"));
    let deleted = server.scrape().await;
    assert!(!deleted.mentions_template("rust"), "{}", deleted.text);
    assert_eq!(deleted.preset("poolkeeper_prebuilds_desired", "go", "small"), Some(3.0));

    // Counters are declared counters, histograms histograms.
    for counter in ["poolkeeper_prebuilds_created", "poolkeeper_prebuilds_claimed"] {
        assert_eq!(deleted.types.get(counter), Some(&SampleType::Counter), "{counter}");
    }
    for histogram in [
        "poolkeeper_reconciliation_cycle_duration_seconds",
        "poolkeeper_lifecycle_tick_duration_seconds",
        "poolkeeper_claim_duration_seconds",
    ] {
        assert_eq!(deleted.types.get(histogram), Some(&SampleType::Histogram), "{histogram}");
    }
}

#[tokio::test]
async fn claims_through_the_api_count_their_batches() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template_id, version_id) = seed::template(&mut conn, "go").await;
    let preset_id = seed::preset(&mut conn, version_id, "small", 2).await;
    for minutes in [30, 20] {
        let created = Utc::now() - chrono::TimeDelta::minutes(minutes);
        let prebuild = seed::WorkspaceSeed::prebuild(template_id, version_id, preset_id, created);
        seed::workspace(&mut conn, prebuild).await;
    }
    let metrics = Arc::new(Metrics::new());
    let api = ApiState::new(db.pool().clone()).with_metrics(metrics.clone());
    let before = parse(metrics.encode());
    assert_eq!(before.get("poolkeeper_claim_batches_total", &[]), Some(0.0));
    assert_eq!(before.get("poolkeeper_claims_batched_total", &[]), Some(0.0));

    // Three people claim at once from a pool of two: two handed over by a batch, one fresh.
    let mut claims = Vec::new();
    for name in ["ann", "ben", "cat"] {
        let user_id = seed::user(&mut conn, name).await;
        let request = ClaimRequest {
            user_id,
            template_id,
            preset_id: Some(preset_id),
            name: "dev".to_owned(),
            autostart_schedule: None,
            ttl_secs: None,
            parameters: BTreeMap::new(),
        };
        let claims_api = api.claims.clone();
        claims.push(tokio::spawn(
            async move { claims_api.claim_or_create(Utc::now(), &request).await },
        ));
    }
    let mut claimed = 0;
    for claim in claims {
        claimed += usize::from(claim.await.expect("claim task").expect("claim").claimed);
    }
    assert_eq!(claimed, 2);

    let after = parse(metrics.encode());
    let batches = after.get("poolkeeper_claim_batches_total", &[]).expect("batches");
    assert!((1.0..=3.0).contains(&batches), "{batches} batches");
    assert_eq!(after.get("poolkeeper_claims_batched_total", &[]), Some(2.0));
    for counter in ["poolkeeper_claim_batches", "poolkeeper_claims_batched"] {
        assert_eq!(after.types.get(counter), Some(&SampleType::Counter), "{counter}");
    }
}

/// Makes every build insert for `workspace_id` fail, as a broken row or constraint would.
async fn break_builds_of(conn: &mut diesel_async::AsyncPgConnection, workspace_id: uuid::Uuid) {
    let function = format!(
        "CREATE FUNCTION refuse_build() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.workspace_id = '{workspace_id}' THEN RAISE EXCEPTION 'refused'; END IF;
           RETURN NEW;
         END $$"
    );
    diesel::sql_query(function).execute(conn).await.expect("function");
    diesel::sql_query(
        "CREATE TRIGGER refuse_build BEFORE INSERT ON workspace_builds
         FOR EACH ROW EXECUTE FUNCTION refuse_build()",
    )
    .execute(conn)
    .await
    .expect("trigger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_applies_in_parallel_and_one_failure_costs_only_its_workspace() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let ids = seed::running_workspaces(&mut conn, 6).await;
    diesel::sql_query("UPDATE workspace_builds SET deadline = '2025-06-02T08:30:00Z'")
        .execute(&mut conn)
        .await
        .expect("deadlines");
    break_builds_of(&mut conn, ids[2]).await;
    let metrics = Arc::new(Metrics::new());
    let server = Server::start(HttpState::with_metrics(metrics.clone())).await;
    let mut executor = LifecycleExecutor::new(db.pool().clone(), db.url())
        .with_parallelism(3)
        .with_metrics(metrics.clone());
    let stats = executor.tick(t("2025-06-02T09:00:00Z")).await.expect("tick").expect("leader");
    assert_eq!((stats.workspaces, stats.applied, stats.failures), (6, 5, 1));
    let pending = "SELECT count(*) AS n FROM provisioner_jobs WHERE status = 'pending'";
    assert_eq!(seed::count(&mut conn, pending).await, 5, "one stop job per other workspace");

    let scraped = server.scrape().await;
    let stops = scraped.get(
        "poolkeeper_lifecycle_transitions_total",
        &[("transition", "stop"), ("reason", "autostop")],
    );
    assert_eq!(stops, Some(5.0), "{}", scraped.text);
    assert_eq!(scraped.get("poolkeeper_lifecycle_tick_duration_seconds", &[]), Some(1.0));
    let errors = [("loop", "lifecycle"), ("kind", "query")];
    assert_eq!(scraped.get("poolkeeper_cycle_errors_total", &errors), Some(1.0));
}

/// Runs the next pending job on the simulated backend and completes it.
async fn run_next_job(conn: &mut diesel_async::AsyncPgConnection) {
    let job = acquire_next_job(conn, "w1", Utc::now()).await.expect("acquire").expect("a job");
    let job_id = job.id;
    let ctx = load_context(conn, job).await.expect("context");
    let output = Backends::default().run(&ctx, &CancellationToken::new()).await.expect("build");
    let result = JobResult::Succeeded(output);
    let done = complete_job(conn, job_id, "w1", &result, Utc::now()).await.expect("complete");
    assert!(done.is_some(), "the worker's own job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_replaces_resources_is_counted_for_its_preset() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (template_id, version_id) = seed::template(&mut conn, "vm").await;
    let preset_id = seed::preset(&mut conn, version_id, "small", 1).await;
    // The simulated backend re-creates `vm` when the owner changes.
    let source = serde_json::json!({
        "duration_ms": 0,
        "agent_start_secs": 0,
        "resources": ["vm", "home"],
        "replace_on_claim": ["vm"],
    });
    diesel::update(template_versions::table.find(version_id))
        .set(template_versions::source.eq(source))
        .execute(&mut conn)
        .await
        .expect("source");
    // Two admins are notified; the replacement still counts once.
    create_user(db.pool(), "tina", UserRole::TemplateAdmin, chrono::Utc::now())
        .await
        .expect("admin");
    create_user(db.pool(), "tom", UserRole::TemplateAdmin, chrono::Utc::now())
        .await
        .expect("admin");
    let member = create_user(db.pool(), "mo", UserRole::Member, chrono::Utc::now())
        .await
        .expect("member")
        .id;
    let metrics = Arc::new(Metrics::new());
    let server = Server::start(HttpState::with_metrics(metrics.clone())).await;
    let mut reconciler = PrebuildReconciler::new(db.pool().clone(), db.url(), CONFIG, 2)
        .with_metrics(metrics.clone());

    ran(reconciler.cycle(Utc::now()).await.expect("cycle"));
    run_next_job(&mut conn).await;
    ran(reconciler.cycle(Utc::now()).await.expect("cycle"));
    let before = server.scrape().await;
    let replacements = "poolkeeper_prebuilds_resource_replacements_total";
    assert_eq!(before.preset(replacements, "vm", "small"), Some(0.0), "a prebuild is no claim");
    assert_eq!(before.preset("poolkeeper_prebuilds_eligible", "vm", "small"), Some(1.0));

    let request = ClaimRequest {
        user_id: member,
        template_id,
        preset_id: Some(preset_id),
        name: "mine".to_owned(),
        autostart_schedule: None,
        ttl_secs: None,
        parameters: BTreeMap::new(),
    };
    assert!(claim_or_create(db.pool(), Utc::now(), &request).await.expect("claim").claimed);
    run_next_job(&mut conn).await;
    ran(reconciler.cycle(Utc::now()).await.expect("cycle"));
    let after = server.scrape().await;
    assert_eq!(after.preset(replacements, "vm", "small"), Some(1.0), "{}", after.text);
    assert_eq!(after.preset("poolkeeper_prebuilds_claimed_total", "vm", "small"), Some(1.0));
}

/// The job figures are refreshed every prebuild cycle, so they must cost what the live
/// queue costs, not what the whole history costs: finished jobs are neither counted nor read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_refresh_reads_only_live_jobs_however_long_the_history() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let history = 500;
    diesel::sql_query(
        "INSERT INTO provisioner_jobs (organization_id, status, transition, started_at, completed_at)
         SELECT $1, (ARRAY['succeeded','failed','canceled'])[1 + i % 3], 'start', now(), now()
         FROM generate_series(1, $2) AS i",
    )
    .bind::<diesel::sql_types::Uuid, _>(poolkeeper::db::DEFAULT_ORGANIZATION_ID)
    .bind::<diesel::sql_types::Integer, _>(history)
    .execute(&mut conn)
    .await
    .expect("history");
    diesel::sql_query(
        "INSERT INTO provisioner_jobs (organization_id, status, transition, started_at, heartbeat_at)
         VALUES ($1, 'pending', 'start', NULL, NULL), ($1, 'pending', 'stop', NULL, NULL),
                ($1, 'running', 'start', now(), now()), ($1, 'canceling', 'delete', now(), now())",
    )
    .bind::<diesel::sql_types::Uuid, _>(poolkeeper::db::DEFAULT_ORGANIZATION_ID)
    .execute(&mut conn)
    .await
    .expect("live jobs");
    diesel::sql_query("ANALYZE provisioner_jobs").execute(&mut conn).await.expect("analyze");

    let figures =
        poolkeeper::store::metrics::load_metrics_figures(&mut conn, &[]).await.expect("figures");
    let expected: Vec<(String, i64)> =
        [("pending", 2), ("running", 1), ("canceling", 1)].map(|(s, n)| (s.to_owned(), n)).into();
    assert_eq!(figures.jobs_by_status, expected, "live statuses only, zeros included");

    // What the statement reads from the table: rows returned plus rows filtered away.
    let explain =
        format!("EXPLAIN (ANALYZE, FORMAT JSON) {}", poolkeeper::store::metrics::LIVE_JOBS_SQL);
    let rows = rows_read_from(&mut conn, &explain, "provisioner_jobs").await;
    // The measure itself: counting every job reads the whole history.
    let everything = "EXPLAIN (ANALYZE, FORMAT JSON) SELECT status, count(*) FROM provisioner_jobs GROUP BY status";
    let all_rows = rows_read_from(&mut conn, everything, "provisioner_jobs").await;
    assert!(all_rows >= 504, "a full count reads {all_rows} rows");
    assert!(rows <= 4, "the refresh read {rows} job rows for 4 live jobs among {history} finished");
}

/// Sums, over every scan of `table` in the plan of `explain` (an `EXPLAIN (ANALYZE, FORMAT
/// JSON)` statement), the rows it returned and the rows its filters removed.
async fn rows_read_from(
    conn: &mut diesel_async::AsyncPgConnection,
    explain: &str,
    table: &str,
) -> u64 {
    fn walk(node: &serde_json::Value, table: &str, sum: &mut u64) {
        if node.get("Relation Name").and_then(|v| v.as_str()) == Some(table) {
            for key in ["Actual Rows", "Rows Removed by Filter", "Rows Removed by Index Recheck"] {
                let loops = node.get("Actual Loops").and_then(|v| v.as_u64()).unwrap_or(1);
                *sum += node.get(key).and_then(|v| v.as_u64()).unwrap_or(0) * loops;
            }
        }
        for child in node.get("Plans").and_then(|v| v.as_array()).into_iter().flatten() {
            walk(child, table, sum);
        }
    }
    #[derive(diesel::QueryableByName)]
    struct Line {
        #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
        plan: String,
    }
    let lines: Vec<Line> = diesel::sql_query(explain).load(conn).await.expect("explain");
    let text: String = lines.into_iter().map(|l| l.plan).collect();
    let parsed: serde_json::Value = serde_json::from_str(&text).expect("plan json");
    let mut sum = 0;
    walk(&parsed[0]["Plan"], table, &mut sum);
    sum
}
