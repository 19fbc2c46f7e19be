//! Times `lifecycle::plan` on 10k and 100k generated workspaces: every rule has candidates,
//! most workspaces carry one of a few autostart schedules, some builds are in flight. A plain
//! `main` that prints figures (`cargo bench -p poolkeeper-core --bench lifecycle`); benches
//! may read the clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use poolkeeper_core::build::{JobStatus, Transition};
use poolkeeper_core::lifecycle::{
    self, AutomaticUpdates, LatestBuild, LifecycleSnapshot, OwnerStatus, Template, Workspace,
};
use poolkeeper_core::schedule::DayName;
use uuid::Uuid;

const ITERATIONS: usize = 10;
const SCHEDULES: [&str; 4] = [
    "CRON_TZ=Europe/Berlin 30 9 * * 1-5",
    "0 9 * * *",
    "CRON_TZ=America/New_York 0 7 * * mon-fri",
    "CRON_TZ=Asia/Tokyo 15 8 * * 0,6",
];

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-06-03T07:30:20Z")
        .map(|t| t.with_timezone(&Utc))
        .expect("bench input")
}

/// A deterministic spread (no randomness: the bench is repeatable).
fn mix(n: u64) -> u64 {
    n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29)
}

fn minutes_ago(n: u64) -> DateTime<Utc> {
    now() - TimeDelta::minutes(i64::try_from(n).expect("bench input"))
}

fn pick<T: Copy>(options: &[T], n: u64) -> T {
    options[usize::try_from(n % options.len() as u64).expect("bench input")]
}

fn workspace(i: u64) -> Workspace {
    let r = mix(i + 1);
    let created = minutes_ago(r % (10 * 24 * 60));
    let job_status = pick(
        &[
            JobStatus::Succeeded,
            JobStatus::Succeeded,
            JobStatus::Succeeded,
            JobStatus::Failed,
            JobStatus::Running,
            JobStatus::Canceled,
        ],
        r >> 8,
    );
    let dormant = (r >> 12) % 10 == 0;
    Workspace {
        id: Uuid::from_u128(u128::from(i) + 1),
        owner_status: pick(
            &[
                OwnerStatus::Active,
                OwnerStatus::Active,
                OwnerStatus::Active,
                OwnerStatus::Suspended,
            ],
            r >> 16,
        ),
        is_prebuild: (r >> 20) % 20 == 0,
        autostart_schedule: ((r >> 24) % 3 != 0).then(|| pick(&SCHEDULES, r >> 28).to_owned()),
        next_start_at: ((r >> 32) % 2 == 0).then(|| minutes_ago((r >> 33) % 3000)),
        last_used_at: minutes_ago((r >> 36) % (20 * 24 * 60)),
        dormant_at: dormant.then(|| minutes_ago(2 * 24 * 60)),
        deleting_at: dormant.then(|| minutes_ago((r >> 40) % (4 * 24 * 60))),
        automatic_updates: pick(&[AutomaticUpdates::Never, AutomaticUpdates::Always], r >> 44),
        latest_build: LatestBuild {
            transition: pick(
                &[
                    Transition::Start,
                    Transition::Start,
                    Transition::Stop,
                    Transition::Stop,
                    Transition::Delete,
                ],
                r >> 46,
            ),
            template_version_id: Uuid::from_u128(0xA1),
            created_at: created,
            deadline: ((r >> 50) % 2 == 0).then(|| created + TimeDelta::hours(8)),
            max_deadline: None,
            job_status,
            job_completed_at: (!job_status.is_in_flight()).then(|| created + TimeDelta::minutes(2)),
        },
        template: Template {
            active_version_id: Uuid::from_u128(pick(&[0xA1, 0xA2], r >> 52)),
            require_active_version: (r >> 54) % 4 == 0,
            user_autostart_enabled: true,
            user_autostop_enabled: true,
            autostart_days: DayName::ALL.to_vec(),
            failure_ttl_secs: pick(&[0, 3600, 86_400], r >> 56),
            time_til_dormant_secs: pick(&[0, 86_400, 7 * 86_400], r >> 58),
            time_til_dormant_autodelete_secs: pick(&[0, 86_400, 30 * 86_400], r >> 60),
        },
    }
}

fn bench(count: u64) {
    let snapshot = LifecycleSnapshot { workspaces: (0..count).map(workspace).collect() };
    let mut times: Vec<Duration> = Vec::with_capacity(ITERATIONS);
    let mut rules = BTreeMap::new();
    for _ in 0..ITERATIONS {
        let started = Instant::now();
        let decisions = lifecycle::plan(now(), &snapshot);
        times.push(started.elapsed());
        rules.clear();
        for decision in &decisions {
            *rules.entry(decision.rule.as_str()).or_insert(0usize) += 1;
        }
        std::hint::black_box(decisions);
    }
    times.sort();
    let rules: Vec<String> = rules.iter().map(|(rule, n)| format!("{rule} {n}")).collect();
    println!(
        "plan: {count:>7} workspaces: min {:.2?}, median {:.2?}, max {:.2?} ({})",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
        rules.join(", "),
    );
}

fn main() {
    bench(10_000);
    bench(100_000);
}
