//! Property tests of the prebuild plan and the claim choice (rules §4). Each invariant is stated
//! in words first, then checked on random snapshots.

use std::collections::HashSet;

use chrono::{DateTime, TimeDelta, Utc};
use poolkeeper_core::build::Transition;
use poolkeeper_core::prebuilds::{
    self, choose_claim, Action, Autoscale, Claim, FailedPrebuild, FinishedStatus, InFlightStatus,
    InProgressPrebuild, PrebuildSnapshot, Preset, PresetPlan, PresetSchedule, PresetStatus,
    RecentBuild, ReconcilerConfig, RunningPrebuild,
};
use poolkeeper_core::retention::{purgeable_builds, BuildHistory};
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

/// Valid, invalid and overlapping schedule candidates (rules §1 windows).
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
        (0u32..4, prop_oneof![Just(0u64), Just(600), Just(3600)]),
    )
        .prop_map(|(interval, lookback, k, m, (keep, grace))| ReconcilerConfig {
            backoff_interval_secs: interval,
            backoff_lookback_secs: lookback,
            failure_hard_limit: k,
            max_pending_creates_per_preset: m,
            failed_keep: keep,
            failed_grace_secs: grace,
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
        (
            prop_oneof![Just(0u64), Just(900)],
            status_strategy(),
            proptest::option::weighted(0.4, autoscale_strategy()),
        ),
    )
        .prop_map(
            move |(
                (activity, desired),
                (ttl, invalidated),
                (zone, schedules),
                (lead, status, autoscale),
            )| {
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
                    autoscale,
                }
            },
        )
}

/// rules §4 "Autoscale" settings, valid ones (`min ≤ max`, a window, headroom ≥ 0).
fn autoscale_strategy() -> impl Strategy<Value = Autoscale> {
    (
        0u32..4,
        0u32..8,
        prop_oneof![Just(60u64), Just(600), Just(3600)],
        prop_oneof![Just(0.5), Just(1.0), Just(1.5), Just(2.0)],
    )
        .prop_map(|(min, extra, window_secs, headroom)| Autoscale {
            min,
            max: min + extra,
            window_secs,
            headroom,
        })
}

fn case_strategy() -> impl Strategy<Value = Case> {
    let presets = (0..PRESETS).map(preset_strategy).collect::<Vec<_>>();
    let running = proptest::collection::vec((0..PRESETS + 1, 0i64..10_000, any::<bool>()), 0..24);
    let in_progress =
        proptest::collection::vec((0..PRESETS + 1, 0usize..3, 0usize..3, 1u32..4), 0..10);
    let recent = proptest::collection::vec((0..PRESETS + 1, 0i64..7200, 0usize..3), 0..14);
    // Failed prebuilds; some share a workspace with a recent build (the hard limit reads it).
    let failed = proptest::collection::vec((0..PRESETS + 1, 0i64..10_000, 0u128..20), 0..12);
    // Claims, some dated after `now` (a file may hold them), some of one workspace twice.
    let claims = proptest::collection::vec((0..PRESETS + 1, -600i64..8000, 0u128..30), 0..16);
    (0i64..7 * 86_400, config_strategy(), presets, running, in_progress, (recent, failed, claims))
        .prop_map(|(shift, config, presets, running, in_progress, (recent, failed, claims))| {
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
            let failed = failed
                .into_iter()
                .map(|(p, age, ws)| FailedPrebuild {
                    // Ids 0x30_0000.. are those of the recent builds.
                    workspace_id: Uuid::from_u128(0x30_0000 + ws),
                    preset_id: preset_id(p),
                    created_at: now - secs(age / 600 * 600),
                })
                .collect();
            let claims = claims
                .into_iter()
                .map(|(p, age, ws)| Claim {
                    workspace_id: Uuid::from_u128(0x50_0000 + ws),
                    preset_id: preset_id(p),
                    at: now - secs(age / 60 * 60),
                })
                .collect();
            Case {
                now,
                snapshot: PrebuildSnapshot {
                    config,
                    presets,
                    running,
                    in_progress,
                    recent_builds,
                    failed,
                    claims,
                },
            }
        })
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
            (Just(s.failed.clone()).prop_shuffle(), Just(s.claims.clone()).prop_shuffle()),
        )
            .prop_map(|(case, running, in_progress, recent_builds, (failed, claims))| {
                let mut other = case.clone();
                other.snapshot.running = running;
                other.snapshot.in_progress = in_progress;
                other.snapshot.recent_builds = recent_builds;
                other.snapshot.failed = failed;
                other.snapshot.claims = claims;
                (case, other)
            })
    })
}

fn is_active(p: &Preset) -> bool {
    p.using_active_version && !p.template_deleted && !p.template_deprecated
}

/// rules §4 expiry, restated independently of the core.
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

/// The deleted ids that are running rows of the plan's preset.
fn running_deletes(snapshot: &PrebuildSnapshot, plan: &PresetPlan) -> HashSet<Uuid> {
    let rows: HashSet<Uuid> = snapshot
        .running
        .iter()
        .filter(|r| r.preset_id == plan.preset_id)
        .map(|r| r.workspace_id)
        .collect();
    deletes(plan).into_iter().filter(|id| rows.contains(id)).collect()
}

/// The deleted ids that are failed rows (and not running rows) of the plan's preset.
fn failed_deletes(snapshot: &PrebuildSnapshot, plan: &PresetPlan) -> Vec<Uuid> {
    let running = running_deletes(snapshot, plan);
    deletes(plan).into_iter().filter(|id| !running.contains(id)).collect()
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

    // Every id a plan deletes is a running or failed row of that preset, and no id is
    // deleted twice.
    #[test]
    fn delete_ids_are_distinct_rows_of_the_preset(case in case_strategy()) {
        for plan in prebuilds::plan(case.now, &case.snapshot) {
            let ids = deletes(&plan);
            let distinct: HashSet<Uuid> = ids.iter().copied().collect();
            prop_assert_eq!(distinct.len(), ids.len(), "duplicate delete in {:?}", plan);
            for id in ids {
                let running = case.snapshot.running.iter().any(|r| r.workspace_id == id
                    && r.preset_id == plan.preset_id);
                let failed = case.snapshot.failed.iter().any(|r| r.workspace_id == id
                    && r.preset_id == plan.preset_id);
                prop_assert!(running || failed, "{} is not a row of {}", id, plan.preset_id);
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
            prop_assert_eq!(running_deletes(&case.snapshot, plan), rows);
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
        next.failed.retain(|r| !gone.contains(&r.workspace_id));
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

    // Backoff, the hard limit and validation_failed withhold creates only: the deletes of
    // running rows are exactly those of the same snapshot without failures and with healthy
    // presets (the failed prebuilds' cleanup reads the hard limit's rows on purpose).
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
            prop_assert_eq!(running_deletes(&case.snapshot, a), running_deletes(&calm, b));
            prop_assert!(creates(a) <= creates(b));
        }
    }

    // Deleting failed prebuilds never changes what the backoff and the hard limit decide:
    // the same snapshot without the deleted failed prebuilds (and without their builds, as
    // once the delete has run) gives the same backoff, hard limit, desired count and creates.
    #[test]
    fn failed_cleanup_never_moves_backoff_or_the_hard_limit(case in case_strategy()) {
        let plans = prebuilds::plan(case.now, &case.snapshot);
        // (A workspace belongs to one preset: the strategy reuses ids across presets.)
        let gone: HashSet<(Uuid, Uuid)> = plans.iter()
            .flat_map(|p| failed_deletes(&case.snapshot, p).into_iter().map(|id| (p.preset_id, id)))
            .collect();
        let mut after = case.snapshot.clone();
        after.failed.retain(|r| !gone.contains(&(r.preset_id, r.workspace_id)));
        after.recent_builds.retain(|b| !gone.contains(&(b.preset_id, b.workspace_id)));
        let replanned = prebuilds::plan(case.now, &after);
        for (a, b) in plans.iter().zip(&replanned) {
            prop_assert_eq!(a.hard_limited, b.hard_limited, "{:?} then {:?}", a, b);
            prop_assert_eq!(a.actions.first().filter(|x| matches!(x, Action::Backoff { .. })),
                b.actions.first().filter(|x| matches!(x, Action::Backoff { .. })));
            prop_assert_eq!(a.state, b.state);
            prop_assert_eq!(creates(a), creates(b));
            prop_assert!(failed_deletes(&after, b).is_empty(), "a second cleanup: {:?}", b);
        }
    }

    // The cleanup keeps the `failed_keep` newest failed prebuilds of every preset, deletes
    // none younger than the grace period (none at all when it is 0), and once the failures
    // are older than the grace period and the lookback, at most `failed_keep` +
    // `failure_hard_limit` failed prebuilds of a preset are left.
    #[test]
    fn failed_prebuilds_are_bounded_and_the_newest_kept(case in case_strategy()) {
        let config = case.snapshot.config;
        let grace = secs(config.failed_grace_secs as i64);
        let late = case.now + grace + secs(config.backoff_lookback_secs as i64 + 1);
        for now in [case.now, late] {
            for plan in prebuilds::plan(now, &case.snapshot) {
                // (The strategy's failed ids never name a running or in-progress row.)
                // One row per workspace, its newest copy; newest first, ties by id.
                let mut rows: Vec<&FailedPrebuild> = case.snapshot.failed.iter()
                    .filter(|r| r.preset_id == plan.preset_id)
                    .collect();
                rows.sort_by_key(|r| (r.workspace_id, std::cmp::Reverse(r.created_at)));
                rows.dedup_by_key(|r| r.workspace_id);
                rows.sort_by_key(|r| (std::cmp::Reverse(r.created_at), r.workspace_id));
                let deleted: HashSet<Uuid> =
                    failed_deletes(&case.snapshot, &plan).into_iter().collect();
                for row in rows.iter().take(config.failed_keep as usize) {
                    prop_assert!(!deleted.contains(&row.workspace_id), "kept row deleted: {:?}", plan);
                }
                for row in &rows {
                    if deleted.contains(&row.workspace_id) {
                        prop_assert!(config.failed_grace_secs > 0);
                        prop_assert!(now - row.created_at > grace, "{:?} within grace", row);
                    }
                }
                if now == late && config.failed_grace_secs > 0 {
                    let left = rows.len() - deleted.len();
                    let bound = (config.failed_keep + config.failure_hard_limit) as usize;
                    prop_assert!(left <= bound, "{} left of {:?}", left, plan);
                }
            }
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

}

proptest! {
    // Each case plans every preset at both ends of time, searching window edges a year
    // ahead: fewer cases keep the binary quick.
    #![proptest_config(proptest_config("prebuild_props", 300))]

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
            failed_keep: 3,
            failed_grace_secs: 0,
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

// rules §4 backoff, hard limit, desired count, status and `next_check_at` against a model
// written here from the rulebook, on one preset with its rows (duplicated rows included).

/// The preset's single schedule: a UTC daily window of whole hours `first..=last`, or an
/// invalid one (minute not `*`) that still counts for N.
#[derive(Debug, Clone)]
struct ModelSchedule {
    first: u32,
    last: u32,
    valid: bool,
    instances: u32,
}

/// How a recent build's age is chosen: minutes ago, or right at the lookback edge.
#[derive(Debug, Clone, Copy)]
enum Age {
    Minutes(i64),
    Lookback(i64),
}

#[derive(Debug, Clone)]
struct ModelCase {
    now: DateTime<Utc>,
    snapshot: PrebuildSnapshot,
    schedule: Option<ModelSchedule>,
}

fn model_case_strategy() -> impl Strategy<Value = ModelCase> {
    let preset = (
        (prop_oneof![4 => Just(true), 1 => Just(false)], 0u32..5, status_strategy()),
        (
            prop_oneof![Just(0u64), Just(1800), Just(3600)],
            proptest::option::weighted(0.2, -7200i64..=0),
        ),
        proptest::option::weighted(
            0.6,
            (0u32..24, 0u32..24, proptest::bool::weighted(0.8), 0u32..8).prop_map(
                |(a, b, valid, instances)| ModelSchedule {
                    first: a.min(b),
                    last: a.max(b),
                    valid,
                    instances,
                },
            ),
        ),
        prop_oneof![Just(0u64), Just(900), Just(3600), Just(5400)],
    );
    let config = (
        prop_oneof![Just(0u64), Just(60), Just(600), 1u64..5000],
        prop_oneof![Just(0u64), Just(600), Just(3600), 1u64..7200],
        0u32..5,
    );
    // Rows of the preset (index 0) and of a preset not in the snapshot (index 1); a second
    // field > 0 duplicates the row exactly that many times.
    let running =
        proptest::collection::vec((0u128..2, 0i64..10_000, any::<bool>(), 0usize..3), 0..10);
    let in_progress = proptest::collection::vec((0u128..2, 0usize..3, 0usize..2), 0..5);
    let recent = proptest::collection::vec(
        (
            0u128..2,
            prop_oneof![
                3 => (0i64..120).prop_map(Age::Minutes),
                1 => (-1i64..=1).prop_map(Age::Lookback),
            ],
            prop_oneof![3 => Just(0usize), 2 => Just(1), 1 => Just(2)],
            0usize..3,
        ),
        0..12,
    );
    (
        prop_oneof![(0i64..7 * 1440).prop_map(|m| m * 60), 0i64..7 * 86_400],
        preset,
        config,
        running,
        in_progress,
        recent,
    )
        .prop_map(
            |(
                shift,
                ((active, desired, status), (ttl, invalidated), schedule, lead),
                (interval, lookback, k),
                running,
                in_progress,
                recent,
            )| {
                let now = base_now() + secs(shift);
                let id = preset_id(0);
                let version = Uuid::from_u128(0x3000);
                let preset = Preset {
                    id,
                    name: "model".to_owned(),
                    template_id: Uuid::from_u128(0x2000),
                    template_version_id: version,
                    using_active_version: active,
                    template_deleted: false,
                    template_deprecated: false,
                    desired_instances: desired,
                    expiration_ttl_secs: ttl,
                    scheduling_timezone: "UTC".to_owned(),
                    schedules: schedule
                        .iter()
                        .map(|s| PresetSchedule {
                            cron: format!(
                                "{} {}-{} * * *",
                                if s.valid { "*" } else { "0" },
                                s.first,
                                s.last
                            ),
                            instances: s.instances,
                        })
                        .collect(),
                    schedule_lead_secs: lead,
                    invalidated_at: invalidated.map(|offset| now + secs(offset)),
                    status,
                    autoscale: None,
                };
                let mut snapshot = PrebuildSnapshot {
                    config: ReconcilerConfig {
                        backoff_interval_secs: interval,
                        backoff_lookback_secs: lookback,
                        failure_hard_limit: k,
                        max_pending_creates_per_preset: 0,
                        failed_keep: 3,
                        failed_grace_secs: 0,
                    },
                    presets: vec![preset],
                    running: Vec::new(),
                    in_progress: Vec::new(),
                    recent_builds: Vec::new(),
                    failed: Vec::new(),
                    claims: Vec::new(),
                };
                for (i, (p, age, ready, copies)) in running.into_iter().enumerate() {
                    let row = RunningPrebuild {
                        workspace_id: Uuid::from_u128(0x10_0000 + i as u128),
                        preset_id: preset_id(p * 9),
                        template_version_id: version,
                        created_at: now - secs(age / 600 * 600),
                        ready,
                    };
                    snapshot.running.extend(std::iter::repeat_n(row, copies + 1));
                }
                for (i, (p, transition, copies)) in in_progress.into_iter().enumerate() {
                    let row = InProgressPrebuild {
                        workspace_id: Uuid::from_u128(0x20_0000 + i as u128),
                        preset_id: preset_id(p * 9),
                        template_version_id: version,
                        transition: [Transition::Start, Transition::Stop, Transition::Delete]
                            [transition],
                        job_status: InFlightStatus::Pending,
                        build_number: 1,
                    };
                    snapshot.in_progress.extend(std::iter::repeat_n(row, copies + 1));
                }
                for (i, (p, age, copies, status)) in recent.into_iter().enumerate() {
                    let created_at = match age {
                        Age::Minutes(m) => now - secs(m * 60),
                        Age::Lookback(d) => now - secs(lookback as i64 + d),
                    };
                    let row = RecentBuild {
                        // Ids out of creation order, so ties in created_at are broken by id.
                        workspace_id: Uuid::from_u128(0x30_0000 + (i as u128 * 7) % 12),
                        preset_id: preset_id(p * 9),
                        created_at,
                        job_status: [
                            FinishedStatus::Failed,
                            FinishedStatus::Succeeded,
                            FinishedStatus::Canceled,
                        ][status],
                    };
                    snapshot.recent_builds.extend(std::iter::repeat_n(row, copies + 1));
                }
                // One build per workspace, as docs/replay-format.md defines `recent_builds` (the copies
                // above are exact): later rows of a reused id are dropped.
                let mut seen = HashSet::new();
                let mut kept = Vec::new();
                for row in snapshot.recent_builds.drain(..) {
                    if seen.insert(row.workspace_id) || kept.last() == Some(&row) {
                        kept.push(row);
                    }
                }
                snapshot.recent_builds = kept;
                ModelCase { now, snapshot, schedule }
            },
        )
}

/// rules §4 pre-warming: the window (UTC hours `first..=last`, daily) is open at `t` iff it
/// contains some instant of `[t, t + lead]`.
fn model_open(s: &ModelSchedule, lead: u64, t: DateTime<Utc>) -> bool {
    let end = t + secs(lead as i64);
    let today = t.date_naive();
    (-1..=2).any(|d| {
        let day = today + TimeDelta::days(d);
        let opens = day.and_hms_opt(s.first, 0, 0).expect("hour").and_utc();
        let closes = opens + TimeDelta::hours(i64::from(s.last - s.first + 1));
        opens <= end && closes > t
    })
}

/// The first instant after `now` at which the window's open state changes (it opens `lead`
/// early, closes on the hour), if any within two days.
fn model_edge(s: &ModelSchedule, lead: u64, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let today = now.date_naive();
    let mut candidates: Vec<DateTime<Utc>> = (-1..=2)
        .flat_map(|d| {
            let opens = (today + TimeDelta::days(d)).and_hms_opt(s.first, 0, 0).expect("hour");
            let opens = opens.and_utc();
            [opens - secs(lead as i64), opens + TimeDelta::hours(i64::from(s.last - s.first + 1))]
        })
        .filter(|c| *c > now)
        .collect();
    candidates.sort();
    let state = model_open(s, lead, now);
    candidates.into_iter().find(|&c| model_open(s, lead, c) != state)
}

#[derive(Debug, PartialEq)]
struct ModelPlan {
    until: Option<DateTime<Utc>>,
    hard_limited: bool,
    desired: u32,
    creates: u32,
    set_status: Option<PresetStatus>,
    next_check_at: Option<DateTime<Utc>>,
}

fn model_plan(case: &ModelCase) -> ModelPlan {
    let now = case.now;
    let snapshot = &case.snapshot;
    let preset = &snapshot.presets[0];
    let config = &snapshot.config;
    let active = is_active(preset);
    // Rows of P, one per workspace id (the copies are exact).
    let mut running: Vec<&RunningPrebuild> =
        snapshot.running.iter().filter(|r| r.preset_id == preset.id).collect();
    running.dedup_by_key(|r| r.workspace_id);
    let fresh: Vec<&&RunningPrebuild> =
        running.iter().filter(|r| !expired(r, preset, now)).collect();
    let mut in_progress: Vec<&InProgressPrebuild> =
        snapshot.in_progress.iter().filter(|r| r.preset_id == preset.id).collect();
    in_progress.dedup_by_key(|r| r.workspace_id);
    let starting = in_progress.iter().filter(|r| r.transition == Transition::Start).count();
    let mut recent: Vec<&RecentBuild> =
        snapshot.recent_builds.iter().filter(|b| b.preset_id == preset.id).collect();
    recent.dedup_by_key(|b| b.workspace_id);
    // Newest first, ties by workspace id.
    recent
        .sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.workspace_id.cmp(&b.workspace_id)));

    // Backoff: N, the window, num_failed over all builds, last among the N newest.
    let largest = preset.schedules.iter().map(|s| s.instances).max().unwrap_or(0);
    let n = preset.desired_instances.max(largest) as usize;
    let window_start = now - secs(config.backoff_lookback_secs as i64);
    let counts =
        |b: &&&RecentBuild| b.job_status == FinishedStatus::Failed && b.created_at >= window_start;
    let last = recent.iter().take(n).filter(counts).map(|b| b.created_at).max();
    let num_failed = recent.iter().filter(counts).count() as i64;
    let until = last
        .map(|last| last + secs(num_failed * config.backoff_interval_secs as i64))
        .filter(|until| active && now <= *until);
    // Hard limit: the k newest exist and all failed.
    let k = config.failure_hard_limit as usize;
    let hard_limited = active
        && k > 0
        && recent.len() >= k
        && recent[..k].iter().all(|b| b.job_status == FinishedStatus::Failed);

    let valid = case.schedule.as_ref().filter(|s| s.valid);
    let lead = preset.schedule_lead_secs;
    let desired = match (active, valid) {
        (false, _) => 0,
        (true, Some(s)) if model_open(s, lead, now) => s.instances,
        (true, _) => preset.desired_instances,
    };
    let withheld =
        until.is_some() || hard_limited || preset.status == PresetStatus::ValidationFailed;
    let creates = if active && !withheld {
        (i64::from(desired) - fresh.len() as i64 - starting as i64).max(0) as u32
    } else {
        0
    };
    let set_status = match (active, hard_limited, preset.status) {
        (true, true, PresetStatus::Healthy) => Some(PresetStatus::HardLimited),
        (true, false, PresetStatus::HardLimited) => Some(PresetStatus::Healthy),
        _ => None,
    };
    // next_check_at: strict boundaries are reported at the first whole second past them.
    let second = secs(1);
    let mut candidates = Vec::new();
    if let Some(until) = until {
        candidates.push(until + second);
        let lookback = secs(config.backoff_lookback_secs as i64);
        candidates.extend(recent.iter().filter(counts).map(|b| b.created_at + lookback + second));
    }
    if let (true, Some(s)) = (active, valid) {
        candidates.extend(model_edge(s, lead, now));
    }
    if preset.expiration_ttl_secs > 0 {
        let ttl = secs(preset.expiration_ttl_secs as i64);
        candidates.extend(fresh.iter().map(|r| r.created_at + ttl + second));
    }
    let next_check_at = candidates.into_iter().filter(|c| *c > now).min();
    ModelPlan { until, hard_limited, desired, creates, set_status, next_check_at }
}

/// The plan as the model sees it.
fn observed(plan: &PresetPlan) -> ModelPlan {
    let until = match plan.actions.first() {
        Some(Action::Backoff { until }) => Some(*until),
        _ => None,
    };
    let set_status = match plan.actions.last() {
        Some(Action::SetStatus { status }) => Some(*status),
        _ => None,
    };
    ModelPlan {
        until,
        hard_limited: plan.hard_limited,
        desired: plan.state.desired,
        creates: creates(plan),
        set_status,
        next_check_at: plan.next_check_at,
    }
}

/// `case` with extra rows: exact copies of some rows, and rows that reuse an id with other
/// contents (a row loaded twice across a page boundary, a second build of a workspace).
fn with_duplicates(case: &Case, picks: &[(usize, i64, bool)]) -> PrebuildSnapshot {
    let mut s = case.snapshot.clone();
    for &(pick, shift, flip) in picks {
        if let Some(row) = case.snapshot.running.get(pick % case.snapshot.running.len().max(1)) {
            s.running.push(row.clone());
            s.running.push(RunningPrebuild {
                created_at: row.created_at + secs(shift),
                ready: row.ready ^ flip,
                ..row.clone()
            });
        }
        if let Some(row) =
            case.snapshot.in_progress.get(pick % case.snapshot.in_progress.len().max(1))
        {
            s.in_progress.push(row.clone());
            s.in_progress
                .push(InProgressPrebuild { build_number: row.build_number + 1, ..row.clone() });
        }
        if let Some(row) =
            case.snapshot.recent_builds.get(pick % case.snapshot.recent_builds.len().max(1))
        {
            s.recent_builds.push(row.clone());
            s.recent_builds.push(RecentBuild {
                created_at: row.created_at + secs(shift),
                job_status: if flip { FinishedStatus::Failed } else { FinishedStatus::Succeeded },
                ..row.clone()
            });
        }
    }
    s
}

fn without_next_check(plans: &[PresetPlan]) -> Vec<PresetPlan> {
    plans.iter().map(|p| PresetPlan { next_check_at: None, ..p.clone() }).collect()
}

proptest! {
    #![proptest_config(proptest_config("prebuild_model_props", 600))]

    /// Against the model: backoff `until` (N = max(desired, largest schedule), num_failed
    /// over the whole lookback, `last` among the N newest, in force while now ≤ until), the
    /// hard limit (k newest all failed), D with the pre-warm lead, creates withheld by backoff,
    /// the hard limit or validation_failed, the status change, and `next_check_at` (the end
    /// of backoff, a failure ageing out of the lookback, the next window edge, the next
    /// expiry) — with exact duplicate rows in every list.
    #[test]
    fn backoff_hard_limit_and_next_check_match_the_model(case in model_case_strategy()) {
        let plans = prebuilds::plan(case.now, &case.snapshot);
        prop_assert_eq!(plans.len(), 1);
        prop_assert_eq!(observed(&plans[0]), model_plan(&case), "{:?}", plans[0]);
        let backoffs =
            plans[0].actions.iter().filter(|a| matches!(a, Action::Backoff { .. })).count();
        prop_assert!(backoffs <= 1);
    }

    /// Duplicated rows: exact copies of rows change nothing; rows reusing an id with other
    /// contents still give the same bytes whatever the order of the rows.
    #[test]
    fn duplicate_rows_give_the_same_plan_under_shuffling(
        case in case_strategy(),
        picks in proptest::collection::vec((any::<usize>(), -1200i64..1200, any::<bool>()), 1..4),
        seed in any::<u64>(),
    ) {
        let plain = render(&prebuilds::plan(case.now, &case.snapshot));
        let mut exact = case.snapshot.clone();
        exact.running.extend(case.snapshot.running.iter().take(picks.len()).cloned());
        exact.in_progress.extend(case.snapshot.in_progress.iter().take(picks.len()).cloned());
        exact.recent_builds.extend(case.snapshot.recent_builds.iter().take(picks.len()).cloned());
        prop_assert_eq!(&render(&prebuilds::plan(case.now, &exact)), &plain);

        let duplicated = with_duplicates(&case, &picks);
        let expected = render(&prebuilds::plan(case.now, &duplicated));
        // Deterministic shuffles (a rotation and a reversal of each list, seeded).
        let mut shuffled = duplicated.clone();
        let turn = |n: usize| if n == 0 { 0 } else { seed as usize % n };
        let n = shuffled.running.len();
        shuffled.running.rotate_left(turn(n));
        shuffled.running.reverse();
        let n = shuffled.in_progress.len();
        shuffled.in_progress.rotate_left(turn(n));
        let n = shuffled.recent_builds.len();
        shuffled.recent_builds.rotate_left(turn(n));
        shuffled.recent_builds.reverse();
        prop_assert_eq!(render(&prebuilds::plan(case.now, &shuffled)), expected);
    }

    /// `next_check_at` is never late: at any instant before it the plan (all but
    /// `next_check_at`) is the one of `now`; and whenever the plan differs at a later
    /// instant, `next_check_at` is set and not after it.
    #[test]
    fn nothing_changes_before_next_check_at(
        case in case_strategy(),
        later in proptest::collection::vec(1i64..2 * 86_400, 4),
    ) {
        let plans = prebuilds::plan(case.now, &case.snapshot);
        let mut probes: Vec<DateTime<Utc>> = later.iter().map(|s| case.now + secs(*s)).collect();
        probes.extend(plans.iter().filter_map(|p| p.next_check_at).map(|at| at - secs(1)));
        for at in probes.into_iter().filter(|at| *at > case.now) {
            let then = prebuilds::plan(at, &case.snapshot);
            for ((before, after), (now_plan, then_plan)) in without_next_check(&plans)
                .iter()
                .zip(without_next_check(&then))
                .zip(plans.iter().zip(&then))
            {
                if before != &after {
                    prop_assert!(
                        now_plan.next_check_at.is_some_and(|check| check <= at),
                        "the plan changed by {} but next_check_at is {:?}: {:?} then {:?}",
                        at, now_plan.next_check_at, now_plan, then_plan
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(proptest_config("prebuild_autoscale_props", 400))]

    // rules §4 "Autoscale": an autoscaled active preset never wants fewer than `min`, nor
    // more than `max` unless its schedule or default count asks for more: that count is a
    // floor (what the same preset wants without autoscale), never lowered by the demand.
    #[test]
    fn autoscale_stays_within_min_and_max_above_the_floor(case in case_strategy()) {
        let mut fixed = case.snapshot.clone();
        for preset in &mut fixed.presets {
            preset.autoscale = None;
        }
        let plans = prebuilds::plan(case.now, &case.snapshot);
        let floors = prebuilds::plan(case.now, &fixed);
        for ((preset, plan), floor) in case.snapshot.presets.iter().zip(&plans).zip(&floors) {
            let Some(a) = preset.autoscale.filter(|_| is_active(preset)) else {
                prop_assert_eq!(plan.state.desired, floor.state.desired);
                continue;
            };
            let desired = plan.state.desired;
            prop_assert!(desired >= a.min, "{:?}", plan);
            prop_assert!(desired >= floor.state.desired, "{:?} below {:?}", plan, floor);
            prop_assert!(desired <= a.max.max(floor.state.desired), "{:?}", plan);
        }
    }

    // Under a constant claim rate (one claim every `period` ≤ window seconds, for longer
    // than two windows) the autoscaled count never changes: no flapping between the two
    // counts a window can hold depending on its phase.
    #[test]
    fn autoscale_never_flaps_under_a_constant_rate(
        a in autoscale_strategy(),
        period_fraction in 0.05f64..=1.0,
        phase in 0i64..3600,
        probes in proptest::collection::vec(0i64..7200, 8),
    ) {
        let window = a.window_secs as i64;
        let period = ((window as f64 * period_fraction) as i64).max(1);
        let now = base_now();
        let preset = Preset {
            id: preset_id(0),
            name: "scaled".to_owned(),
            template_id: Uuid::from_u128(0x2000),
            template_version_id: Uuid::from_u128(0x3000),
            using_active_version: true,
            template_deleted: false,
            template_deprecated: false,
            desired_instances: 0,
            expiration_ttl_secs: 0,
            scheduling_timezone: String::new(),
            schedules: Vec::new(),
            schedule_lead_secs: 0,
            invalidated_at: None,
            status: PresetStatus::Healthy,
            autoscale: Some(a),
        };
        let start = now - secs(3 * window + phase % period);
        let end = now + secs(2 * window + 7200);
        let claims: Vec<Claim> = (0..)
            .map(|i| start + secs(i * period))
            .take_while(|at| *at <= end)
            .enumerate()
            .map(|(i, at)| Claim {
                workspace_id: Uuid::from_u128(0x50_0000 + i as u128),
                preset_id: preset.id,
                at,
            })
            .collect();
        let snapshot = PrebuildSnapshot {
            config: ReconcilerConfig {
                backoff_interval_secs: 0,
                backoff_lookback_secs: 0,
                failure_hard_limit: 0,
                max_pending_creates_per_preset: 0,
                failed_keep: 0,
                failed_grace_secs: 0,
            },
            presets: vec![preset],
            running: Vec::new(),
            in_progress: Vec::new(),
            recent_builds: Vec::new(),
            failed: Vec::new(),
            claims,
        };
        let first = prebuilds::plan(now, &snapshot)[0].state.desired;
        for probe in probes {
            let at = now + secs(probe);
            let desired = prebuilds::plan(at, &snapshot)[0].state.desired;
            prop_assert_eq!(desired, first, "at {} (period {} s)", at, period);
        }
    }

    // The demand only ever raises the count at once: one more claim at `now` never lowers
    // the desired count of any preset.
    #[test]
    fn a_new_claim_never_lowers_the_count(case in case_strategy(), preset in 0..PRESETS) {
        let before = prebuilds::plan(case.now, &case.snapshot);
        let mut more = case.snapshot.clone();
        more.claims.push(Claim {
            workspace_id: Uuid::from_u128(0x60_0000),
            preset_id: preset_id(preset),
            at: case.now,
        });
        for (a, b) in before.iter().zip(prebuilds::plan(case.now, &more)) {
            prop_assert!(b.state.desired >= a.state.desired, "{:?} then {:?}", a, b);
        }
    }
}

/// What the rules read of one workspace's builds (rules §5 "Builds"): the latest build, the
/// newest finished start, the newest one counting as a build, the newest naming a preset.
fn read_by_rules(builds: &[BuildHistory]) -> [Option<u32>; 4] {
    let mut sorted: Vec<&BuildHistory> = builds.iter().collect();
    sorted.sort_by_key(|b| b.build_number);
    let newest = |pick: &dyn Fn(&BuildHistory) -> bool| {
        sorted.iter().rev().find(|b| pick(b)).map(|b| b.build_number)
    };
    let start = |b: &BuildHistory| b.transition == Transition::Start && b.finished_at.is_some();
    [
        sorted.last().map(|b| b.build_number),
        newest(&start),
        newest(&|b| start(b) && !b.failed_outside_template),
        newest(&|b| b.preset_named),
    ]
}

proptest! {
    #![proptest_config(proptest_config("retention_props", 500))]

    // rules §5: purging a workspace's purgeable builds never changes what a rule reads of
    // it; every purged build, and the build after it, finished before the cutoff; purging
    // again at the same cutoff finds nothing more (the daemon's second purge is a no-op).
    #[test]
    fn purging_changes_nothing_a_rule_reads(
        steps in proptest::collection::vec(
            (0usize..3, any::<bool>(), proptest::option::weighted(0.9, 0i64..120), any::<bool>()),
            1..12,
        ),
        cutoff_days in 0i64..120,
    ) {
        let origin = base_now();
        let builds: Vec<BuildHistory> = steps
            .iter()
            .enumerate()
            .map(|(i, (transition, preset, finished_day, outside))| BuildHistory {
                build_number: i as u32 + 1,
                transition: [Transition::Start, Transition::Stop, Transition::Delete][*transition],
                preset_named: *preset,
                finished_at: finished_day.map(|d| origin + TimeDelta::days(d)),
                failed_outside_template: *outside,
            })
            .collect();
        let cutoff = origin + TimeDelta::days(cutoff_days);
        let purged = purgeable_builds(&builds, cutoff);
        let kept: Vec<BuildHistory> =
            builds.iter().filter(|b| !purged.contains(&b.build_number)).cloned().collect();
        prop_assert_eq!(read_by_rules(&kept), read_by_rules(&builds));
        for number in &purged {
            let at = |n: u32| builds.iter().find(|b| b.build_number == n).and_then(|b| b.finished_at);
            prop_assert!(at(*number).is_some_and(|t| t < cutoff));
            prop_assert!(at(number + 1).is_some_and(|t| t < cutoff), "the next build is old too");
        }
        // What was kept was kept for good: a second pass at the same cutoff purges nothing.
        prop_assert_eq!(purgeable_builds(&kept, cutoff), Vec::<u32>::new());
    }
}

fn tags_strategy() -> impl Strategy<Value = poolkeeper_core::tags::Tags> {
    proptest::collection::btree_map(
        prop_oneof![Just("pool".to_owned()), Just("region".to_owned()), Just("gpu".to_owned())],
        prop_oneof![Just("a".to_owned()), Just("b".to_owned())],
        0..3,
    )
}

proptest! {
    #![proptest_config(proptest_config("tags_props", 300))]

    // rules §6: a worker covers a job iff each of the job's tags is one of its own; so every
    // worker covers untagged jobs, covering is kept when a worker gains a tag it lacked, and
    // a prebuild fleet tagged with a version's prebuild tags over its tags takes that
    // version's prebuild jobs.
    #[test]
    fn covering_is_inclusion_of_tags(
        worker in tags_strategy(),
        job in tags_strategy(),
        version in tags_strategy(),
        prebuild in tags_strategy(),
        extra in ("[x-z]", "[ab]"),
    ) {
        use poolkeeper_core::tags::{covers, job_tags, Tags};
        let included = job.iter().all(|(k, v)| worker.get(k) == Some(v));
        prop_assert_eq!(covers(&worker, &job), included);
        prop_assert!(covers(&worker, &Tags::new()));
        prop_assert!(covers(&job, &job));
        let mut more = worker.clone();
        more.entry(extra.0).or_insert(extra.1);
        prop_assert!(!covers(&worker, &job) || covers(&more, &job));
        let fleet = job_tags(&version, &prebuild, true);
        prop_assert!(covers(&fleet, &job_tags(&version, &prebuild, true)));
        prop_assert!(prebuild.iter().all(|(k, v)| fleet.get(k) == Some(v)));
    }
}
