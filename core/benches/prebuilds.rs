//! Times `prebuilds::plan` on large snapshots: 1k and 10k presets sharing 100k running
//! prebuilds, plus builds in flight and recent build history. A plain `main` that prints
//! figures (`cargo bench -p poolkeeper-core --bench prebuilds`); benches may read the clock.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use poolkeeper_core::build::Transition;
use poolkeeper_core::prebuilds::{
    self, Autoscale, Claim, FinishedStatus, InFlightStatus, InProgressPrebuild, PrebuildSnapshot,
    Preset, PresetSchedule, PresetStatus, RecentBuild, ReconcilerConfig, RunningPrebuild,
};
use uuid::Uuid;

const RUNNING_ROWS: u128 = 100_000;
const ITERATIONS: usize = 10;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-06-02T09:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .expect("bench input")
}

/// A deterministic spread of ids and instants (no randomness: the bench is repeatable).
fn mix(n: u128) -> u128 {
    n.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835).rotate_left(17)
}

fn snapshot(presets: u128) -> PrebuildSnapshot {
    let now = now();
    let preset_id = |p: u128| Uuid::from_u128(0x1000_0000 + p);
    let version = |p: u128| Uuid::from_u128(0x2000_0000 + p / 4);
    let presets_list = (0..presets)
        .map(|p| Preset {
            id: preset_id(p),
            name: format!("preset-{p}"),
            template_id: Uuid::from_u128(0x3000_0000 + p / 8),
            template_version_id: version(p),
            using_active_version: p % 10 != 0,
            template_deleted: false,
            template_deprecated: p % 50 == 1,
            desired_instances: u32::try_from(p % 7).expect("bench input"),
            expiration_ttl_secs: if p % 3 == 0 { 86_400 } else { 0 },
            scheduling_timezone: if p % 2 == 0 { "Europe/Berlin".into() } else { String::new() },
            schedules: if p % 2 == 0 {
                vec![
                    PresetSchedule { cron: "* 8-12 * * 1-5".into(), instances: 10 },
                    PresetSchedule { cron: "* 13-18 * * 1-5".into(), instances: 6 },
                ]
            } else {
                Vec::new()
            },
            schedule_lead_secs: if p % 4 == 0 { 900 } else { 0 },
            invalidated_at: (p % 11 == 0).then(|| now - TimeDelta::hours(3)),
            status: if p % 13 == 0 { PresetStatus::HardLimited } else { PresetStatus::Healthy },
            autoscale: (p % 5 == 0).then_some(Autoscale {
                min: 1,
                max: 12,
                window_secs: 900,
                headroom: 1.5,
            }),
        })
        .collect();
    let running = (0..RUNNING_ROWS)
        .map(|i| {
            let p = mix(i) % presets;
            RunningPrebuild {
                workspace_id: Uuid::from_u128(mix(i + 1)),
                preset_id: preset_id(p),
                template_version_id: version(p),
                created_at: now
                    - TimeDelta::seconds(i64::try_from(mix(i) % 200_000).expect("bench input")),
                ready: i % 5 != 0,
            }
        })
        .collect();
    let in_progress = (0..RUNNING_ROWS / 10)
        .map(|i| {
            let p = mix(i + 7) % presets;
            InProgressPrebuild {
                workspace_id: Uuid::from_u128(mix(i + RUNNING_ROWS + 1)),
                preset_id: preset_id(p),
                template_version_id: version(p),
                transition: [Transition::Start, Transition::Stop, Transition::Delete]
                    [usize::try_from(i % 3).expect("bench input")],
                job_status: if i % 2 == 0 {
                    InFlightStatus::Pending
                } else {
                    InFlightStatus::Running
                },
                build_number: u32::try_from(1 + i % 3).expect("bench input"),
            }
        })
        .collect();
    let recent_builds = (0..RUNNING_ROWS / 5)
        .map(|i| RecentBuild {
            workspace_id: Uuid::from_u128(mix(i + 2 * RUNNING_ROWS + 1)),
            preset_id: preset_id(mix(i + 3) % presets),
            created_at: now
                - TimeDelta::seconds(i64::try_from(mix(i) % 7200).expect("bench input")),
            job_status: if i % 4 == 0 { FinishedStatus::Failed } else { FinishedStatus::Succeeded },
        })
        .collect();
    PrebuildSnapshot {
        config: ReconcilerConfig {
            backoff_interval_secs: 60,
            backoff_lookback_secs: 3600,
            failure_hard_limit: 3,
            max_pending_creates_per_preset: 5,
            failed_keep: 3,
            failed_grace_secs: 3600,
        },
        presets: presets_list,
        running,
        in_progress,
        recent_builds,
        failed: Vec::new(),
        // A claim a second over the last half hour, on the autoscaled presets.
        claims: (0..1800u128)
            .map(|i| Claim {
                workspace_id: Uuid::from_u128(0x9000_0000 + i),
                preset_id: preset_id(mix(i) % presets / 5 * 5),
                at: now - TimeDelta::seconds(i64::try_from(i).expect("bench input")),
            })
            .collect(),
    }
}

fn bench(presets: u128) {
    let snapshot = snapshot(presets);
    let mut times: Vec<Duration> = Vec::with_capacity(ITERATIONS);
    let mut actions = 0;
    for _ in 0..ITERATIONS {
        let started = Instant::now();
        let plans = prebuilds::plan(now(), &snapshot);
        times.push(started.elapsed());
        actions = plans.iter().map(|p| p.actions.len()).sum::<usize>();
        std::hint::black_box(plans);
    }
    times.sort();
    println!(
        "plan: {presets:>6} presets, {} running, {} in progress, {} recent builds: \
         min {:.2?}, median {:.2?}, max {:.2?} ({actions} actions)",
        snapshot.running.len(),
        snapshot.in_progress.len(),
        snapshot.recent_builds.len(),
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
    );
}

fn main() {
    bench(1_000);
    bench(10_000);
}
