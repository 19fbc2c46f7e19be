//! Claim latency on the largest prebuild scenario, after `history` builds of claimed
//! workspaces' history (people's builds carry their preset): one claimer alone; `claimers`
//! concurrent claimers spread over the presets; all of them on one preset (contention); and
//! the same spread through the HTTP API with token auth, as people claim.
//!
//! Each run starts with a round of one claim per claimer, off the clock: a server's pool
//! keeps its connections, and a fresh connection's first claim pays PostgreSQL's catalog and
//! plan caches and the statements' preparation once. That first claim's latency is reported
//! on its own row.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use diesel::sql_types::{Text, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use futures_util::future::try_join_all;
use poolkeeper::db::DbPool;
use poolkeeper::store::claim::{ClaimBatcher, ClaimRequest};
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::claim_http::Api;
use crate::claim_seed;
use crate::pgbench::References;
use crate::prebuilds::{self, Scenario};
use crate::report::{percentile, rate_verdict, show, thousands, verdict, Report};
use crate::round_trips::RoundTrips;
use crate::server::{self, Server};
use crate::waits::Sampler;

/// Issue #23's targets for concurrent claimers, against pgbench at the same client count:
/// a p99 at most this many times pgbench's, and a rate at least this share of its TPS.
const P99_TARGET_VS_PGBENCH: u32 = 5;
const RATE_TARGET_VS_PGBENCH: f64 = 0.10;
/// Sequential claims of the claimer alone.
const ALONE_CLAIMS: usize = 50;
/// Claims counted through the round-trip proxy, after one that warms its connection.
const COUNTED_CLAIMS: usize = 10;

/// Sizes of the claim part.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub claimers: usize,
    pub claims: usize,
    /// Builds of claimed workspaces' history seeded before the claims.
    pub history: u64,
}

#[derive(diesel::QueryableByName)]
pub(crate) struct PresetRow {
    #[diesel(sql_type = SqlUuid)]
    pub preset_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub template_id: Uuid,
    #[diesel(sql_type = Text)]
    pub preset: String,
    #[diesel(sql_type = Text)]
    pub template: String,
}

/// One claim of claimer `c`, its `k`th: whether a prebuild was handed over.
pub(crate) type ClaimFn =
    Arc<dyn Fn(usize, usize) -> Pin<Box<dyn Future<Output = Result<bool>> + Send>> + Send + Sync>;

struct Claimed {
    /// The warm-up round's latencies (one claim per claimer, off the clock).
    first: Vec<Duration>,
    latencies: Vec<Duration>,
    claimed: usize,
    wall: Duration,
}

pub async fn measure(
    server: &Server,
    scenario: &Scenario,
    sizes: Sizes,
    profile: bool,
    (refs, proxy): (&References, &RoundTrips),
    report: &mut Report,
) -> Result<()> {
    let Sizes { claimers, claims, history } = sizes;
    let users: Vec<(Uuid, String)> =
        (0..claimers).map(|c| (Uuid::new_v4(), format!("claimer-{c}"))).collect();
    let values: Vec<String> =
        users.iter().map(|(id, name)| format!("('{id}', '{name}')")).collect();
    server::execute(
        &scenario.url,
        &format!("INSERT INTO users (id, username) VALUES {}", values.join(", ")),
    )
    .await?;
    if history > 0 {
        eprintln!("claims: seeding {} builds of claim history...", thousands(history));
        claim_seed::history(&scenario.url, history).await?;
    }
    // Enough for the warm-up round too.
    let hot = claim_seed::hot_preset(&scenario.url, claimers * (claims + 1)).await?;
    let mut conn = server::connect(&scenario.url).await?;
    let presets: Vec<PresetRow> = diesel::sql_query(
        "SELECT p.id AS preset_id, v.template_id, p.name AS preset, t.name AS template
         FROM presets p JOIN template_versions v ON v.id = p.template_version_id
         JOIN templates t ON t.id = v.template_id
         WHERE p.id <> $1 ORDER BY p.name",
    )
    .bind::<SqlUuid, _>(hot.preset_id)
    .load(&mut conn)
    .await
    .context("list the presets")?;
    drop(conn);
    let presets = Arc::new(presets);
    let with_history = if history > 0 {
        format!(", {} builds of claim history", thousands(history))
    } else {
        String::new()
    };
    let users = Arc::new(users);

    // One claimer alone: the latency of a claim with nothing to wait for.
    let pool = prebuilds::claim_pool(scenario, 1)?;
    let run = claimed_in_store(&pool, &presets, &users, "alone", false);
    let alone = drive(1, ALONE_CLAIMS, run, None).await?;
    pool.close();
    report.row(
        "Claim latency, a fresh connection's first claim (1 claimer)",
        alone.first.iter().max().map(|d| show(*d)).unwrap_or_else(|| "-".to_owned()),
        "-",
        "-",
    );
    let label = format!("1 claimer alone, {ALONE_CLAIMS} claims{with_history}");
    latency_rows(report, &label, alone, false, refs, 1);
    round_trip_row(scenario, proxy, &presets, &users, report).await?;

    let spread =
        format!("{claimers} concurrent claimers, {} claims", thousands((claimers * claims) as u64));
    let pool = prebuilds::claim_pool(scenario, claimers)?;
    let run = claimed_in_store(&pool, &presets, &users, "spread", false);
    let sampler = Sampler::maybe(profile, server, &scenario.name).await?;
    let out = drive(claimers, claims, run, Some(&pool)).await?;
    if let Some(sampler) = sampler {
        report.note(format!("profile, claims: {}", sampler.finish().await?));
    }
    latency_rows(report, &format!("{spread}{with_history}"), out, true, refs, claimers);
    report.note(format!(
        "concurrent claimers: {claimers} share a pool of {} connections, as many as \
         `poolkeeper run` gives its API by default (`--pool-size`)",
        pool.status().max_size
    ));

    let one = Arc::new(vec![hot]);
    let run = claimed_in_store(&pool, &one, &users, "hot", true);
    let out = drive(claimers, claims, run, Some(&pool)).await?;
    latency_rows(report, &format!("{spread}, all on one preset"), out, true, refs, claimers);
    pool.close();

    let api = Api::start(scenario, claimers, &users).await?;
    let run = api.claims(&presets);
    let out = drive(claimers, claims, run, None).await?;
    api.stop();
    latency_rows(report, &format!("{spread} through the HTTP API"), out, true, refs, claimers);
    Ok(())
}

/// The client's waits for the server per claim, the pool's checkout included: each one a
/// wake-up of both sides, which is what concurrent claims on few cores pay for.
async fn round_trip_row(
    scenario: &Scenario,
    proxy: &RoundTrips,
    presets: &Arc<Vec<PresetRow>>,
    users: &Arc<Vec<(Uuid, String)>>,
    report: &mut Report,
) -> Result<()> {
    let pool = server::pool(&proxy.url(&scenario.name), 1)?;
    let run = claimed_in_store(&pool, presets, users, "counted", false);
    // The first claim opens the connection and prepares the statements.
    run(0, 0).await?;
    let before = proxy.now();
    for k in 1..=COUNTED_CLAIMS {
        run(0, k).await?;
    }
    let tally = proxy.since(before);
    pool.close();
    report.row(
        "Round trips per claim (1 claimer, pool checkout included)",
        format!("{:.1}", tally.waits as f64 / COUNTED_CLAIMS as f64),
        "-",
        "-",
    );
    report.note(
        "round trips per claim: requests the server answered; two sent together (pipelined) \
         count as two though the client waits once",
    );
    Ok(())
}

/// Claims through the store's claim batcher, the API's way in (without HTTP), each claimer as
/// its own user; `fixed` = every claim of the first preset, otherwise spread over them all.
fn claimed_in_store(
    pool: &DbPool,
    presets: &Arc<Vec<PresetRow>>,
    users: &Arc<Vec<(Uuid, String)>>,
    tag: &'static str,
    fixed: bool,
) -> ClaimFn {
    // The API's way in: concurrent claims are handed over in batches.
    let (claims, presets, users) =
        (ClaimBatcher::new(pool.clone()), presets.clone(), users.clone());
    Arc::new(move |c, k| {
        let (claims, presets, users) = (claims.clone(), presets.clone(), users.clone());
        Box::pin(async move {
            let preset = if fixed { &presets[0] } else { pick(&presets, c, k) };
            let request = ClaimRequest {
                user_id: users[c].0,
                template_id: preset.template_id,
                preset_id: Some(preset.preset_id),
                name: format!("{tag}-{c}-{k}"),
                autostart_schedule: None,
                ttl_secs: None,
                parameters: BTreeMap::new(),
            };
            let outcome = claims.claim_or_create(Utc::now(), &request).await.context("claim")?;
            Ok(outcome.claimed)
        })
    })
}

/// The preset of claimer `c`'s `k`th claim: a deterministic spread (the run is repeatable).
pub(crate) fn pick(presets: &[PresetRow], c: usize, k: usize) -> &PresetRow {
    let mixed = ((c * 7919 + k) as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    &presets[usize::try_from(mixed >> 16).unwrap_or(usize::MAX) % presets.len()]
}

/// Runs `claimers` tasks of `claims` claims each (one at a time), started together, after a
/// warm-up round of one claim each (claim index `claims`, off the clock); every connection of
/// `pool` is opened before.
async fn drive(
    claimers: usize,
    claims: usize,
    run: ClaimFn,
    pool: Option<&DbPool>,
) -> Result<Claimed> {
    if let Some(pool) = pool {
        let warm: Vec<_> = try_join_all((0..pool.status().max_size).map(|_| pool.get()))
            .await
            .context("open the claimers' connections")?;
        drop(warm);
    }
    let warm_up = (0..claimers).map(|c| {
        let run = run.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            run(c, claims).await?;
            anyhow::Ok(started.elapsed())
        })
    });
    let mut first = Vec::with_capacity(claimers);
    for joined in try_join_all(warm_up).await.context("a warm-up claim task failed")? {
        first.push(joined?);
    }
    let barrier = Arc::new(Barrier::new(claimers));
    let tasks = (0..claimers).map(|c| {
        let (run, barrier) = (run.clone(), barrier.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            let mut latencies = Vec::with_capacity(claims);
            let mut claimed = 0;
            for k in 0..claims {
                let started = Instant::now();
                let handed = run(c, k).await?;
                latencies.push(started.elapsed());
                claimed += usize::from(handed);
            }
            anyhow::Ok((latencies, claimed))
        })
    });
    let started = Instant::now();
    let results = try_join_all(tasks).await.context("a claimer task failed")?;
    let wall = started.elapsed();
    let mut out = Claimed { first, latencies: Vec::new(), claimed: 0, wall };
    for result in results {
        let (latencies, claimed) = result?;
        out.latencies.extend(latencies);
        out.claimed += claimed;
    }
    Ok(out)
}

fn latency_rows(
    report: &mut Report,
    label: &str,
    mut out: Claimed,
    judged: bool,
    refs: &References,
    claimers: usize,
) {
    let total = out.latencies.len();
    let p50 = percentile(&mut out.latencies, 0.50);
    let p99 = percentile(&mut out.latencies, 0.99);
    let reference = refs.at(claimers);
    let vs = |ours: Duration, theirs: Option<Duration>| match theirs {
        Some(theirs) if !theirs.is_zero() && claimers > 1 => format!(
            "{:.1}× pgbench's {} ({claimers} clients)",
            ours.as_secs_f64() / theirs.as_secs_f64(),
            show(theirs)
        ),
        _ => "-".to_owned(),
    };
    report.row(
        format!("Claim latency p50 ({label})"),
        show(p50),
        "-",
        vs(p50, reference.map(|r| r.p50)),
    );
    report.row(
        format!("Claim latency p99 ({label})"),
        show(p99),
        match reference {
            Some(r) if judged => verdict(p99, r.p99 * P99_TARGET_VS_PGBENCH),
            _ => "-".to_owned(),
        },
        vs(p99, reference.map(|r| r.p99)),
    );
    let per_sec = total as f64 / out.wall.as_secs_f64();
    report.row(
        format!("Claims/s ({label})"),
        format!("{} ({} of {total} handed a prebuild)", crate::report::rate(per_sec), out.claimed),
        match reference {
            Some(r) if judged => rate_verdict(per_sec, r.tps * RATE_TARGET_VS_PGBENCH),
            _ => "-".to_owned(),
        },
        refs.rate_ratio(per_sec, claimers),
    );
}
