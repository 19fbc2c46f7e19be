//! Property tests of the prebuild plan and the claim choice (SPEC §4). Each invariant is stated
//! in words first, then checked on random snapshots.

use std::collections::HashSet;

use chrono::{DateTime, TimeDelta, Utc};
use poolkeeper_core::build::Transition;
use poolkeeper_core::prebuilds::{
    self, choose_claim, Action, FinishedStatus, InFlightStatus, InProgressPrebuild,
    PrebuildSnapshot, Preset, PresetPlan, PresetSchedule, PresetStatus, RecentBuild,
    ReconcilerConfig, RunningPrebuild,
};
use poolkeeper_tests::proptest_config;
use proptest::prelude::*;
use uuid::Uuid;

fn base_now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-06-02T09:00:00Z").expect("valid instant").with_timezone(&Utc)
}

fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

const PRESETS: u128 = 4;

fn preset_id(n: u128) -> Uuid {
    Uuid::from_u128(0x1000 + n)
}

/// Valid, invalid and overlapping schedule candidates (SPEC §1 windows).
const CRONS: &[&str] =
    &["* 9-18 * * 1-5", "* 0-8 * * *", "* 19-23 * * 0,6", "0 9 * * *", "* 12-14 * * *"];
const ZONES: &[&str] = &["UTC", "Europe/Berlin", "America/New_York", "", "Nowhere/Atlantis"];

#[derive(Debug, Clone)]
struct Case {
    now: DateTime<Utc>,
    snapshot: PrebuildSnapshot,
}

fn config_strategy() -> impl Strategy<Value = ReconcilerConfig> {
    (
        prop_oneof![Just(0u64), Just(60), Just(600)],
        prop_oneof![Just(0u64), Just(600), Just(3600)],
        0u32..4,
        0u32..4,
    )
        .prop_map(|(interval, lookback, k, m)| ReconcilerConfig {
            backoff_interval_secs: interval,
            backoff_lookback_secs: lookback,
            failure_hard_limit: k,
            max_pending_creates_per_preset: m,
        })
}

fn status_strategy() -> impl Strategy<Value = PresetStatus> {
    prop_oneof![
        Just(PresetStatus::Healthy),
        Just(PresetStatus::HardLimited),
        Just(PresetStatus::ValidationFailed)
    ]
}

fn preset_strategy(n: u128) -> impl Strategy<Value = Preset> {
    (
        // 0..=4 active, 5 an old version, 6 a deleted template, 7 a deprecated one.
        (0u8..8, 0u32..6),
        (prop_oneof![Just(0u64), Just(600), Just(3600)], proptest::option::of(-7200i64..=0)),
        (0usize..ZONES.len(), proptest::collection::vec((0usize..CRONS.len(), 0u32..8), 0..3)),
        (prop_oneof![Just(0u64), Just(900)], status_strategy()),
    )
        .prop_map(
            move |((activity, desired), (ttl, invalidated), (zone, schedules), (lead, status))| {
                Preset {
                    id: preset_id(n),
                    name: format!("preset-{n}"),
                    template_id: Uuid::from_u128(0x2000),
                    template_version_id: Uuid::from_u128(0x3000 + n),
                    using_active_version: activity != 5,
                    template_deleted: activity == 6,
                    template_deprecated: activity == 7,
                    desired_instances: desired,
                    expiration_ttl_secs: ttl,
                    scheduling_timezone: ZONES[zone].to_owned(),
                    schedules: schedules
                        .into_iter()
                        .map(|(cron, instances)| PresetSchedule {
                            cron: CRONS[cron].to_owned(),
                            instances,
                        })
                        .collect(),
                    schedule_lead_secs: lead,
                    invalidated_at: invalidated.map(|offset| base_now() + secs(offset)),
                    status,
                }
            },
        )
}

fn case_strategy() -> impl Strategy<Value = Case> {
    let presets = (0..PRESETS).map(preset_strategy).collect::<Vec<_>>();
    let running = proptest::collection::vec((0..PRESETS + 1, 0i64..10_000, any::<bool>()), 0..24);
    let in_progress =
        proptest::collection::vec((0..PRESETS + 1, 0usize..3, 0usize..3, 1u32..4), 0..10);
    let recent = proptest::collection::vec((0..PRESETS + 1, 0i64..7200, 0usize..3), 0..14);
    (0i64..7 * 86_400, config_strategy(), presets, running, in_progress, recent).prop_map(
        |(shift, config, presets, running, in_progress, recent)| {
            let now = base_now() + secs(shift);
            let version = |p: u128| Uuid::from_u128(0x3000 + p);
            let running = running
                .into_iter()
                .enumerate()
                .map(|(i, (p, age, ready))| RunningPrebuild {
                    workspace_id: Uuid::from_u128(0x10_0000 + i as u128),
                    preset_id: preset_id(p),
                    template_version_id: version(p),
                    // Coarse ages so ties in created_at are common.
                    created_at: now - secs(age / 600 * 600),
                    ready,
                })
                .collect();
            let in_progress = in_progress
                .into_iter()
                .enumerate()
                .map(|(i, (p, transition, status, build_number))| InProgressPrebuild {
                    workspace_id: Uuid::from_u128(0x20_0000 + i as u128),
                    preset_id: preset_id(p),
                    template_version_id: version(p),
                    transition: [Transition::Start, Transition::Stop, Transition::Delete]
                        [transition],
                    job_status: [
                        InFlightStatus::Pending,
                        InFlightStatus::Running,
                        InFlightStatus::Canceling,
                    ][status],
                    build_number,
                })
                .collect();
            let recent_builds = recent
                .into_iter()
                .enumerate()
                .map(|(i, (p, age, status))| RecentBuild {
                    workspace_id: Uuid::from_u128(0x30_0000 + i as u128),
                    preset_id: preset_id(p),
                    created_at: now - secs(age / 60 * 60),
                    job_status: [
                        FinishedStatus::Failed,
                        FinishedStatus::Succeeded,
                        FinishedStatus::Canceled,
                    ][status],
                })
                .collect();
            Case {
                now,
                snapshot: PrebuildSnapshot { config, presets, running, in_progress, recent_builds },
            }
        },
    )
}

/// A case and a permutation of each of its row lists.
fn shuffled_case_strategy() -> impl Strategy<Value = (Case, Case)> {
    case_strategy().prop_flat_map(|case| {
        let s = &case.snapshot;
        (
            Just(case.clone()),
            Just(s.running.clone()).prop_shuffle(),
            Just(s.in_progress.clone()).prop_shuffle(),
            Just(s.recent_builds.clone()).prop_shuffle(),
        )
            .prop_map(|(case, running, in_progress, recent_builds)| {
                let mut other = case.clone();
                other.snapshot.running = running;
                other.snapshot.in_progress = in_progress;
                other.snapshot.recent_builds = recent_builds;
                (case, other)
            })
    })
}

fn is_active(p: &Preset) -> bool {
    p.using_active_version && !p.template_deleted && !p.template_deprecated
}

/// SPEC §4 expiry, restated independently of the core.
fn expired(row: &RunningPrebuild, p: &Preset, now: DateTime<Utc>) -> bool {
    let ttl = i64::try_from(p.expiration_ttl_secs).expect("small ttl");
    (ttl > 0 && now - row.created_at > secs(ttl))
        || p.invalidated_at.is_some_and(|at| row.created_at < at)
}

fn deletes(plan: &PresetPlan) -> Vec<Uuid> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Delete { workspace_ids } => Some(workspace_ids.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn creates(plan: &PresetPlan) -> u32 {
    plan.actions
        .iter()
        .map(|a| match a {
            Action::Create { count } => *count,
            _ => 0,
        })
        .sum()
}

fn render(plans: &[PresetPlan]) -> String {
    serde_json::to_string(plans).expect("plans render")
}

proptest! {
    #![proptest_config(proptest_config("prebuild_props", 1000))]

    // The plan is a function of the snapshot's content, not of its row order: shuffling
    // `running`, `in_progress` and `recent_builds` gives byte-identical output.
    #[test]
    fn output_is_independent_of_row_order((case, shuffled) in shuffled_case_strategy()) {
        let a = render(&prebuilds::plan(case.now, &case.snapshot));
        let b = render(&prebuilds::plan(shuffled.now, &shuffled.snapshot));
        prop_assert_eq!(a, b);
    }

    // Every id a plan deletes is a running row of that preset, and no id is deleted twice.
    #[test]
    fn delete_ids_are_distinct_rows_of_the_preset(case in case_strategy()) {
        for plan in prebuilds::plan(case.now, &case.snapshot) {
            let ids = deletes(&plan);
            let distinct: HashSet<Uuid> = ids.iter().copied().collect();
            prop_assert_eq!(distinct.len(), ids.len(), "duplicate delete in {:?}", plan);
            for id in ids {
                prop_assert!(case.snapshot.running.iter().any(|r| r.workspace_id == id
                    && r.preset_id == plan.preset_id), "{} is not a row of {}", id, plan.preset_id);
            }
        }
    }

    // A create never makes |R| + starting exceed D, and plans hold at most one create.
    #[test]
    fn creates_never_overshoot_desired(case in case_strategy()) {
        for plan in prebuilds::plan(case.now, &case.snapshot) {
            let count = creates(&plan);
            let create_actions =
                plan.actions.iter().filter(|a| matches!(a, Action::Create { .. })).count();
            prop_assert!(create_actions <= 1);
            if count > 0 {
                let fresh = plan.state.actual - plan.state.expired;
                prop_assert!(fresh + plan.state.starting + count <= plan.state.desired, "{:?}", plan);
            }
        }
    }

    // Inactive presets never create, never back off, never change status, are never
    // hard-limited, and delete every one of their rows.
    #[test]
    fn inactive_presets_never_create(case in case_strategy()) {
        let plans = prebuilds::plan(case.now, &case.snapshot);
        for (preset, plan) in case.snapshot.presets.iter().zip(&plans) {
            if is_active(preset) {
                continue;
            }
            prop_assert!(!plan.hard_limited);
            prop_assert_eq!(plan.state.desired, 0);
            prop_assert!(plan.actions.iter().all(|a| matches!(a,
                Action::CancelPending | Action::Delete { .. })), "{:?}", plan);
            let rows: HashSet<Uuid> = case.snapshot.running.iter()
                .filter(|r| r.preset_id == preset.id).map(|r| r.workspace_id).collect();
            prop_assert_eq!(deletes(plan).into_iter().collect::<HashSet<_>>(), rows);
        }
    }

    // With no backoff, hard limit, validation failure or cap, the plan converges: once its
    // deletes are gone and its creates are running and ready, the next plan at the same
    // instant creates nothing and deletes nothing.
    #[test]
    fn applied_plan_is_a_fixed_point(case in case_strategy()) {
        let mut snapshot = case.snapshot.clone();
        snapshot.recent_builds.clear();
        snapshot.config.failure_hard_limit = 0;
        snapshot.config.max_pending_creates_per_preset = 0;
        for preset in &mut snapshot.presets {
            preset.status = PresetStatus::Healthy;
        }
        let plans = prebuilds::plan(case.now, &snapshot);
        let mut next = snapshot.clone();
        let gone: HashSet<Uuid> = plans.iter().flat_map(deletes).collect();
        next.running.retain(|r| !gone.contains(&r.workspace_id));
        let mut fresh_id = 0x90_0000u128;
        for (preset, plan) in snapshot.presets.iter().zip(&plans) {
            for _ in 0..creates(plan) {
                fresh_id += 1;
                next.running.push(RunningPrebuild {
                    workspace_id: Uuid::from_u128(fresh_id),
                    preset_id: preset.id,
                    template_version_id: preset.template_version_id,
                    created_at: case.now,
                    ready: true,
                });
            }
        }
        for plan in prebuilds::plan(case.now, &next) {
            prop_assert_eq!(creates(&plan), 0, "{:?}", plan);
            prop_assert!(deletes(&plan).is_empty(), "{:?}", plan);
            prop_assert_eq!(plan.state.extraneous, 0);
        }
    }

    // Backoff, the hard limit and validation_failed withhold creates only: the deletes are
    // exactly those of the same snapshot without failures and with healthy presets.
    #[test]
    fn failures_never_withhold_a_delete(case in case_strategy()) {
        let mut calm = case.snapshot.clone();
        calm.recent_builds.clear();
        for preset in &mut calm.presets {
            preset.status = PresetStatus::Healthy;
        }
        let with = prebuilds::plan(case.now, &case.snapshot);
        let without = prebuilds::plan(case.now, &calm);
        for (a, b) in with.iter().zip(&without) {
            prop_assert_eq!(deletes(a), deletes(b));
            prop_assert!(creates(a) <= creates(b));
        }
    }

    // The claim choice offers exactly the ready, non-expired rows of the preset on the active
    // version of a live template, oldest first (ties by id).
    #[test]
    fn claim_offers_only_ready_fresh_active_rows(case in case_strategy()) {
        for preset in &case.snapshot.presets {
            let choice = choose_claim(&case.snapshot.running, preset, case.now);
            let mut expected: Vec<&RunningPrebuild> = case.snapshot.running.iter()
                .filter(|r| preset.using_active_version && !preset.template_deleted
                    && r.preset_id == preset.id
                    && r.template_version_id == preset.template_version_id && r.ready && !expired(r, preset, case.now))
                .collect();
            expected.sort_by_key(|r| (r.created_at, r.workspace_id));
            let expected: Vec<Uuid> = expected.iter().map(|r| r.workspace_id).collect();
            prop_assert_eq!(choice.chosen(), expected.first().copied());
            prop_assert_eq!(choice.candidates, expected);
        }
    }

    // Random snapshots with extreme values (huge durations, instants at the ends of time,
    // duplicated ids) never make the core panic.
    #[test]
    fn random_snapshots_never_panic(
        case in case_strategy(),
        ttl in any::<u64>(),
        lead in any::<u64>(),
        interval in any::<u64>(),
        lookback in any::<u64>(),
        desired in any::<u32>(),
        k in any::<u32>(),
        m in any::<u32>(),
        far in any::<bool>(),
    ) {
        let mut snapshot = case.snapshot.clone();
        snapshot.config = ReconcilerConfig {
            backoff_interval_secs: interval,
            backoff_lookback_secs: lookback,
            failure_hard_limit: k,
            max_pending_creates_per_preset: m,
        };
        for preset in &mut snapshot.presets {
            preset.expiration_ttl_secs = ttl;
            preset.schedule_lead_secs = lead;
            preset.desired_instances = desired;
        }
        let edge = if far { DateTime::<Utc>::MAX_UTC } else { DateTime::<Utc>::MIN_UTC };
        if let Some(row) = snapshot.running.first().cloned() {
            snapshot.running.push(RunningPrebuild { created_at: edge, ..row });
        }
        if let Some(build) = snapshot.recent_builds.first().cloned() {
            snapshot.recent_builds.push(RecentBuild { created_at: edge, ..build });
        }
        for now in [case.now, edge] {
            let plans = prebuilds::plan(now, &snapshot);
            prop_assert_eq!(plans.len(), snapshot.presets.len());
            let _ = render(&plans);
            for preset in &snapshot.presets {
                let _ = choose_claim(&snapshot.running, preset, now);
            }
        }
    }
}
