//! Claim latency: `claimers` concurrent claimers, each claiming `claims` prebuilds (one at
//! a time) from presets spread over the largest prebuild scenario.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use diesel::sql_types::Uuid as SqlUuid;
use diesel_async::RunQueryDsl;
use futures_util::future::try_join_all;
use poolkeeper::store::claim::{claim_or_create, ClaimRequest};
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::pgbench::References;
use crate::prebuilds::{self, Scenario};
use crate::report::{percentile, show, thousands, verdict, Report};
use crate::server::{self, Server};
use crate::waits::Sampler;

const P99_TARGET: Duration = Duration::from_millis(25);

#[derive(diesel::QueryableByName)]
struct PresetRow {
    #[diesel(sql_type = SqlUuid)]
    preset_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    template_id: Uuid,
}

struct Claimed {
    latencies: Vec<Duration>,
    claimed: usize,
}

pub async fn measure(
    server: &Server,
    scenario: &Scenario,
    (claimers, claims): (usize, usize),
    profile: bool,
    refs: &References,
    report: &mut Report,
) -> Result<()> {
    let users: Vec<Uuid> = (0..claimers).map(|_| Uuid::new_v4()).collect();
    let values: Vec<String> =
        users.iter().enumerate().map(|(c, id)| format!("('{id}', 'claimer-{c}')")).collect();
    server::execute(
        &scenario.url,
        &format!("INSERT INTO users (id, username) VALUES {}", values.join(", ")),
    )
    .await?;
    let mut conn = server::connect(&scenario.url).await?;
    let presets: Vec<PresetRow> = diesel::sql_query(
        "SELECT p.id AS preset_id, v.template_id FROM presets p
         JOIN template_versions v ON v.id = p.template_version_id ORDER BY p.name",
    )
    .load(&mut conn)
    .await
    .context("list the presets")?;
    drop(conn);
    let presets = Arc::new(presets);
    let pool = prebuilds::claim_pool(scenario, claimers)?;
    // Every claimer's connection is opened before the clock starts.
    let warm: Vec<_> = try_join_all((0..claimers).map(|_| pool.get()))
        .await
        .context("open the claimers' connections")?;
    drop(warm);
    let barrier = Arc::new(Barrier::new(claimers));
    let tasks = (0..claimers).map(|c| {
        let pool = pool.clone();
        let presets = presets.clone();
        let barrier = barrier.clone();
        let users = users.clone();
        tokio::spawn(async move {
            let user_id = users[c];
            let request = |k: usize, name: String| {
                let preset = &presets[spread(c * claims + k) % presets.len()];
                ClaimRequest {
                    user_id,
                    template_id: preset.template_id,
                    preset_id: Some(preset.preset_id),
                    name,
                    autostart_schedule: None,
                    ttl_secs: None,
                    parameters: BTreeMap::new(),
                }
            };
            barrier.wait().await;
            let mut out = Claimed { latencies: Vec::with_capacity(claims), claimed: 0 };
            for k in 0..claims {
                let request = request(k, format!("claim-{c}-{k}"));
                let started = Instant::now();
                let outcome =
                    claim_or_create(&pool, Utc::now(), &request).await.context("claim")?;
                out.latencies.push(started.elapsed());
                out.claimed += usize::from(outcome.claimed);
            }
            anyhow::Ok(out)
        })
    });
    let sampler = Sampler::maybe(profile, server, &scenario.name).await?;
    let started = Instant::now();
    let results = try_join_all(tasks).await.context("a claimer task failed")?;
    let wall = started.elapsed();
    if let Some(sampler) = sampler {
        report.note(format!("profile, claims: {}", sampler.finish().await?));
    }
    pool.close();
    let mut latencies = Vec::new();
    let mut claimed = 0;
    for result in results {
        let result = result?;
        latencies.extend(result.latencies);
        claimed += result.claimed;
    }
    let total = latencies.len();
    let p50 = percentile(&mut latencies, 0.50);
    let p99 = percentile(&mut latencies, 0.99);
    let reference = refs.at(claimers);
    let vs = |ours: Duration, theirs: Option<Duration>| match theirs {
        Some(theirs) if !theirs.is_zero() => format!(
            "{:.1}× pgbench's {} ({claimers} clients)",
            ours.as_secs_f64() / theirs.as_secs_f64(),
            show(theirs)
        ),
        _ => "-".to_owned(),
    };
    let label = format!("{claimers} concurrent claimers, {} claims", thousands(total as u64));
    report.row(
        format!("Claim latency p50 ({label})"),
        show(p50),
        "-",
        vs(p50, reference.map(|r| r.p50)),
    );
    report.row(
        format!("Claim latency p99 ({label})"),
        show(p99),
        verdict(p99, P99_TARGET),
        vs(p99, reference.map(|r| r.p99)),
    );
    report.row(
        format!("Claims/s ({label})"),
        format!(
            "{} ({claimed} of {total} handed a prebuild)",
            crate::report::rate(total as f64 / wall.as_secs_f64())
        ),
        "-",
        refs.rate_ratio(total as f64 / wall.as_secs_f64(), claimers),
    );
    Ok(())
}

/// A deterministic spread over the presets (no randomness: the run is repeatable).
fn spread(n: usize) -> usize {
    let mixed = (n as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    usize::try_from(mixed >> 16).unwrap_or(usize::MAX)
}
