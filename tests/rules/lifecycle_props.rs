//! Property tests of the lifecycle decisions (rules §2). Each invariant is stated in words
//! first, then checked on random but realistic snapshots: a few real autostart schedules (and
//! one the shell could hand over unparsed), instants around `now` at minute and sub-minute
//! offsets so equality edges come up, every job status and owner status.

use chrono::{DateTime, TimeDelta, Utc};
use poolkeeper_core::build::{JobStatus, Transition};
use poolkeeper_core::lifecycle::{
    self, decide, tick_of, AutomaticUpdates, Decision, LatestBuild, LifecycleSnapshot, OwnerStatus,
    Reason, Rule, Template, Workspace,
};
use poolkeeper_core::schedule::DayName;
use poolkeeper_tests::proptest_config;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use uuid::Uuid;

/// Autostart schedules workspaces carry. The last one is invalid: the replay parser rejects
/// it, but the shell may pass one from the database and the core must explain, not panic.
const SCHEDULES: &[&str] = &[
    "CRON_TZ=Europe/Berlin 30 9 * * 1-5",
    "0 9 * * *",
    "CRON_TZ=America/New_York 0 7 * * mon-fri",
    "CRON_TZ=Asia/Tokyo 15 8 * * 0,6",
    "CRON_TZ=Europe/Berlin 30 2 * * *",
    "61 25 * * *",
];

const VERSIONS: [Uuid; 2] = [Uuid::from_u128(0xA1), Uuid::from_u128(0xA2)];
const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

use poolkeeper_tests::seed::t as at;

fn minutes(n: i64) -> TimeDelta {
    TimeDelta::minutes(n)
}

/// `now`: a fortnight in June, or one spanning Berlin's and New York's spring DST change, at
/// a whole minute or some seconds into it.
fn now_strategy() -> impl Strategy<Value = DateTime<Utc>> {
    (
        select(vec![at("2025-06-02T00:00:00Z"), at("2025-03-24T00:00:00Z")]),
        0i64..(14 * 24 * 60),
        prop_oneof![Just(0i64), 1i64..60],
    )
        .prop_map(|(base, minute, second)| base + minutes(minute) + TimeDelta::seconds(second))
}

/// An instant `now + offset` with the offset in whole minutes, sometimes half a minute off.
fn around(now: DateTime<Utc>, range: std::ops::Range<i64>) -> impl Strategy<Value = DateTime<Utc>> {
    (range, prop_oneof![4 => Just(0i64), 1 => Just(30)])
        .prop_map(move |(offset, second)| now + minutes(offset) + TimeDelta::seconds(second))
}

fn job_status_strategy() -> impl Strategy<Value = JobStatus> {
    prop_oneof![
        6 => Just(JobStatus::Succeeded),
        2 => Just(JobStatus::Failed),
        1 => Just(JobStatus::Pending),
        1 => Just(JobStatus::Running),
        1 => Just(JobStatus::Canceling),
        1 => Just(JobStatus::Canceled),
    ]
}

fn build_strategy(now: DateTime<Utc>) -> impl Strategy<Value = LatestBuild> {
    (
        prop_oneof![4 => Just(Transition::Start), 4 => Just(Transition::Stop), 1 => Just(Transition::Delete)],
        select(VERSIONS.to_vec()),
        around(now, -(20 * 24 * 60)..1),
        // Often right at the tick, so the equality edges come up.
        proptest::option::weighted(
            0.7,
            prop_oneof![-2i64..3, -(3 * 24 * 60i64)..(3 * 24 * 60)],
        ),
        job_status_strategy(),
        proptest::option::weighted(0.9, 0i64..120),
    )
        .prop_map(move |(transition, version, created_at, deadline, job_status, completed)| {
            LatestBuild {
                transition,
                template_version_id: version,
                created_at,
                // Deadlines are whole minutes from the tick, so they sometimes fall on it.
                deadline: deadline.map(|offset| tick_of(now) + minutes(offset)),
                max_deadline: None,
                job_status,
                job_completed_at: if job_status.is_in_flight() {
                    None
                } else {
                    completed.map(|offset| created_at + minutes(offset))
                },
            }
        })
}

fn template_strategy() -> impl Strategy<Value = Template> {
    (
        select(VERSIONS.to_vec()),
        (any::<bool>(), prop_oneof![5 => Just(true), 1 => Just(false)], any::<bool>()),
        prop_oneof![
            3 => Just(DayName::ALL.to_vec()),
            1 => subsequence(DayName::ALL.to_vec(), 0..=7),
        ],
        select(vec![0, HOUR, DAY]),
        select(vec![0, HOUR, DAY, 7 * DAY]),
        select(vec![0, HOUR, DAY, 30 * DAY]),
    )
        .prop_map(
            |(
                active_version_id,
                (require_active_version, user_autostart_enabled, user_autostop_enabled),
                autostart_days,
                failure_ttl_secs,
                time_til_dormant_secs,
                time_til_dormant_autodelete_secs,
            )| Template {
                active_version_id,
                require_active_version,
                user_autostart_enabled,
                user_autostop_enabled,
                autostart_days,
                failure_ttl_secs,
                time_til_dormant_secs,
                time_til_dormant_autodelete_secs,
            },
        )
}

fn workspace_strategy(now: DateTime<Utc>) -> impl Strategy<Value = Workspace> {
    (
        (
            prop_oneof![
                6 => Just(OwnerStatus::Active),
                1 => Just(OwnerStatus::Suspended),
                1 => Just(OwnerStatus::Dormant),
            ],
            proptest::bool::weighted(0.1),
            proptest::option::weighted(0.7, select(SCHEDULES.to_vec())),
            proptest::option::weighted(0.5, around(now, -(3 * 24 * 60)..(3 * 24 * 60))),
        ),
        // last_used_at: anywhere in a month, or within minutes of a dormancy threshold.
        prop_oneof![
            2 => around(now, -(30 * 24 * 60)..1),
            1 => (select(vec![60i64, 24 * 60, 7 * 24 * 60]), -2i64..3)
                .prop_map(move |(ago, off)| tick_of(now) - minutes(ago) + minutes(off)),
        ],
        proptest::option::weighted(
            0.3,
            (
                around(now, -(30 * 24 * 60)..1),
                proptest::option::weighted(0.8, -(30 * 24 * 60i64)..(30 * 24 * 60)),
            ),
        ),
        prop_oneof![Just(AutomaticUpdates::Never), Just(AutomaticUpdates::Always)],
        build_strategy(now),
        template_strategy(),
    )
        .prop_map(
            |(
                (owner_status, is_prebuild, schedule, next_start_at),
                last_used_at,
                dormancy,
                automatic_updates,
                latest_build,
                template,
            )| Workspace {
                id: Uuid::nil(),
                owner_status,
                is_prebuild,
                autostart_schedule: schedule.map(str::to_owned),
                next_start_at,
                last_used_at,
                dormant_at: dormancy.map(|(dormant_at, _)| dormant_at),
                deleting_at: dormancy
                    .and_then(|(dormant_at, offset)| offset.map(|m| dormant_at + minutes(m))),
                automatic_updates,
                latest_build,
                template,
            },
        )
}

/// A snapshot of 1–6 workspaces with distinct ids, and `now`.
fn case_strategy() -> impl Strategy<Value = (DateTime<Utc>, LifecycleSnapshot)> {
    now_strategy().prop_flat_map(|now| {
        (Just(now), proptest::collection::vec(workspace_strategy(now), 1..7)).prop_map(
            |(now, mut workspaces)| {
                for (index, workspace) in workspaces.iter_mut().enumerate() {
                    workspace.id = Uuid::from_u128(index as u128 + 1);
                }
                (now, LifecycleSnapshot { workspaces })
            },
        )
    })
}

/// The workspace as the shell leaves it after carrying out `decision` at `tick`: the new
/// build succeeded at once, dormancy fields and `next_start_at` written (rules §2 side effects).
fn apply(workspace: &Workspace, decision: &Decision, tick: DateTime<Utc>) -> Workspace {
    let mut next = workspace.clone();
    if let Some(transition) = decision.transition {
        next.latest_build = LatestBuild {
            transition,
            template_version_id: if decision.use_active_version {
                workspace.template.active_version_id
            } else {
                workspace.latest_build.template_version_id
            },
            created_at: tick,
            deadline: None,
            max_deadline: None,
            job_status: JobStatus::Succeeded,
            job_completed_at: Some(tick),
        };
    }
    if let Some(mark) = decision.mark_dormant {
        next.dormant_at = Some(mark.dormant_at);
        next.deleting_at = mark.deleting_at;
        next.next_start_at = None;
    }
    if let Some(next_start_at) = decision.next_start_at {
        next.next_start_at = Some(next_start_at);
    }
    next
}

fn pairs(snapshot: &LifecycleSnapshot, now: DateTime<Utc>) -> Vec<(&Workspace, Decision)> {
    snapshot.workspaces.iter().zip(lifecycle::plan(now, snapshot)).collect()
}

proptest! {
    #![proptest_config(proptest_config("lifecycle_props", 1000))]

    /// Deterministic: the same snapshot gives the same decisions; each decision is
    /// `decide(workspace, now)` of its own workspace alone, so reordering the input only
    /// reorders the output; one entry per workspace, in input order.
    #[test]
    fn decisions_are_deterministic_and_per_workspace((now, snapshot) in case_strategy()) {
        let decisions = lifecycle::plan(now, &snapshot);
        prop_assert_eq!(&decisions, &lifecycle::plan(now, &snapshot));
        prop_assert_eq!(decisions.len(), snapshot.workspaces.len());
        for (workspace, decision) in snapshot.workspaces.iter().zip(&decisions) {
            prop_assert_eq!(decision.workspace_id, workspace.id);
            prop_assert_eq!(decision, &decide(workspace, now));
            prop_assert_eq!(decision, &decide(workspace, tick_of(now)));
        }
        let mut reversed = snapshot.clone();
        reversed.workspaces.reverse();
        let mut expected = decisions;
        expected.reverse();
        prop_assert_eq!(lifecycle::plan(now, &reversed), expected);
    }

    /// A decision is well formed: at most one transition (the type allows no more), and a
    /// transition or a dormancy mark always comes with its reason; `use_active_version` only
    /// for a start; a mark is dated at the tick; every decision explains itself.
    #[test]
    fn decisions_are_well_formed((now, snapshot) in case_strategy()) {
        let tick = tick_of(now);
        for (_, decision) in pairs(&snapshot, now) {
            prop_assert!(!decision.why.is_empty());
            if decision.transition.is_some() || decision.mark_dormant.is_some() {
                prop_assert!(decision.reason.is_some(), "{:?}", decision);
            }
            if decision.use_active_version {
                prop_assert_eq!(decision.transition, Some(Transition::Start));
            }
            if let Some(mark) = decision.mark_dormant {
                prop_assert_eq!(mark.dormant_at, tick);
                prop_assert_eq!(decision.reason, Some(Reason::Dormancy));
            }
            if let Some(next_start_at) = decision.next_start_at {
                prop_assert!(next_start_at > tick);
            }
        }
    }

    /// Never starts a workspace whose latest build is a start.
    #[test]
    fn never_starts_a_started_workspace((now, snapshot) in case_strategy()) {
        for (workspace, decision) in pairs(&snapshot, now) {
            if workspace.latest_build.transition == Transition::Start {
                prop_assert_ne!(decision.transition, Some(Transition::Start));
            }
        }
    }

    /// Never stops a workspace whose latest build is a stop, unless that stop failed (rules §2
    /// rule 3 stops a failed start *or stop* again once the failure TTL has passed).
    #[test]
    fn never_stops_a_stopped_workspace((now, snapshot) in case_strategy()) {
        for (workspace, decision) in pairs(&snapshot, now) {
            let build = &workspace.latest_build;
            if build.transition == Transition::Stop && decision.transition == Some(Transition::Stop) {
                prop_assert_eq!(build.job_status, JobStatus::Failed);
                prop_assert_eq!(decision.reason, Some(Reason::Failedstop));
            }
        }
    }

    /// Never deletes a workspace that is not dormant; a delete is always an auto-delete.
    #[test]
    fn never_deletes_an_awake_workspace((now, snapshot) in case_strategy()) {
        for (workspace, decision) in pairs(&snapshot, now) {
            if decision.transition == Some(Transition::Delete) {
                prop_assert!(workspace.dormant_at.is_some());
                prop_assert_eq!(decision.reason, Some(Reason::Autodelete));
            }
        }
    }

    /// A workspace whose latest job is pending, running or canceling never transitions nor is
    /// marked dormant: a build is in flight.
    #[test]
    fn builds_in_flight_never_transition((now, snapshot) in case_strategy()) {
        for (workspace, decision) in pairs(&snapshot, now) {
            if workspace.latest_build.job_status.is_in_flight() {
                prop_assert_eq!(decision.transition, None);
                prop_assert_eq!(decision.mark_dormant, None);
                prop_assert_eq!(decision.reason, None);
            }
        }
    }

    /// Prebuilds belong to the reconciler: no transition, no mark, no next start, no reason.
    #[test]
    fn prebuilds_are_left_to_the_reconciler((now, snapshot) in case_strategy()) {
        for (workspace, decision) in pairs(&snapshot, now) {
            if workspace.is_prebuild {
                prop_assert!(!decision.has_effect(), "{:?}", decision);
                prop_assert_eq!(decision.reason, None);
                prop_assert!(!decision.use_active_version);
                prop_assert_eq!(decision.rule, Rule::Prebuild);
            }
        }
    }

    /// Applying a decision settles it: on the state the shell leaves behind (the new build
    /// succeeded at the tick, dormancy fields and `next_start_at` written), the same rule
    /// does not fire again, neither at the same tick nor later.
    #[test]
    fn an_applied_decision_does_not_fire_again(
        (now, snapshot) in case_strategy(),
        later in 0i64..(3 * 24 * 60),
    ) {
        let tick = tick_of(now);
        for (workspace, decision) in pairs(&snapshot, now) {
            let Some(reason) = decision.reason else { continue };
            let applied = apply(workspace, &decision, tick);
            for when in [tick, tick + minutes(later)] {
                let again = decide(&applied, when);
                prop_assert_ne!(
                    again.reason,
                    Some(reason),
                    "decided {:?} then, on the applied state at {}, {:?}",
                    decision,
                    when,
                    again
                );
            }
        }
    }
}

/// An independent model of rules §2, written from the rulebook without the core's helpers:
/// the reason the decision must carry, or `None` (outer) where the model does not say (an
/// autostart schedule other than the UTC daily `0 9 * * *` on every day).
fn model_reason(workspace: &Workspace, now: DateTime<Utc>) -> Option<Option<Reason>> {
    // tick: whole minutes from the Unix epoch.
    let tick = DateTime::from_timestamp(now.timestamp().div_euclid(60) * 60, 0).expect("range");
    let build = &workspace.latest_build;
    let secs = |n: u64| TimeDelta::seconds(n as i64);
    let in_flight =
        matches!(build.job_status, JobStatus::Pending | JobStatus::Running | JobStatus::Canceling);
    let deleted =
        build.transition == Transition::Delete && build.job_status == JobStatus::Succeeded;
    if workspace.is_prebuild || deleted || in_flight {
        return Some(None);
    }
    let dormant = workspace.dormant_at.is_some();
    let failed = build.job_status == JobStatus::Failed;
    // 1. Autostop: fires at the deadline itself.
    if !failed
        && !dormant
        && build.transition == Transition::Start
        && (workspace.owner_status == OwnerStatus::Suspended
            || build.deadline.is_some_and(|deadline| tick >= deadline))
    {
        return Some(Some(Reason::Autostop));
    }
    // 2. Autostart, caught up: the first 09:00Z strictly after the stop build.
    let schedule = workspace.autostart_schedule.as_deref().filter(|s| !s.trim().is_empty());
    let could_start = workspace.owner_status == OwnerStatus::Active
        && !failed
        && !dormant
        && build.transition == Transition::Stop
        && workspace.template.user_autostart_enabled
        && schedule.is_some();
    if could_start {
        if schedule != Some("0 9 * * *") || workspace.template.autostart_days.len() != 7 {
            return None;
        }
        let nine = build.created_at.date_naive().and_hms_opt(9, 0, 0).expect("09:00").and_utc();
        let due = if nine > build.created_at { nine } else { nine + TimeDelta::days(1) };
        if workspace.next_start_at.is_none_or(|next| next <= tick) && tick >= due {
            return Some(Some(Reason::Autostart));
        }
    }
    // 3. Failed-build stop: strictly after the failure TTL.
    let ttl = workspace.template.failure_ttl_secs;
    if ttl > 0
        && failed
        && matches!(build.transition, Transition::Start | Transition::Stop)
        && build.job_completed_at.is_some_and(|done| tick - done > secs(ttl))
    {
        return Some(Some(Reason::Failedstop));
    }
    // 4. Dormancy: strictly after time_til_dormant.
    let ttd = workspace.template.time_til_dormant_secs;
    if !dormant && ttd > 0 && tick - workspace.last_used_at > secs(ttd) {
        return Some(Some(Reason::Dormancy));
    }
    // 5. Auto-delete: strictly after deleting_at; a failed delete only 24 h after it failed.
    if let (true, Some(deleting_at)) = (dormant, workspace.deleting_at) {
        let retry_ok = !(build.transition == Transition::Delete && failed)
            || build.job_completed_at.is_some_and(|done| tick - done > TimeDelta::hours(24));
        if workspace.template.time_til_dormant_autodelete_secs > 0 && tick > deleting_at && retry_ok
        {
            return Some(Some(Reason::Autodelete));
        }
    }
    Some(None)
}

proptest! {
    #![proptest_config(proptest_config("lifecycle_liveness_props", 1000))]

    /// Liveness, against the model above: every rule fires when (and only when) its
    /// conditions hold — autostop once the deadline is reached and nothing blocks it, a
    /// missed autostart is caught up, failed-build stop, dormancy and auto-delete exactly
    /// after their time; a dormancy mark is dated at the tick with `deleting_at` = tick +
    /// the auto-delete time, and stops a running workspace.
    #[test]
    fn each_rule_fires_exactly_when_the_model_says((now, snapshot) in case_strategy()) {
        let tick = DateTime::from_timestamp(now.timestamp().div_euclid(60) * 60, 0)
            .expect("range");
        for (workspace, decision) in pairs(&snapshot, now) {
            let Some(expected) = model_reason(workspace, now) else { continue };
            prop_assert_eq!(decision.reason, expected, "{:?} at {}: {}", workspace, now, decision.why);
            match expected {
                Some(Reason::Autostop) | Some(Reason::Failedstop) => {
                    prop_assert_eq!(decision.transition, Some(Transition::Stop));
                }
                Some(Reason::Autostart) => {
                    prop_assert_eq!(decision.transition, Some(Transition::Start));
                }
                Some(Reason::Autodelete) => {
                    prop_assert_eq!(decision.transition, Some(Transition::Delete));
                }
                Some(Reason::Dormancy) => {
                    let autodelete = workspace.template.time_til_dormant_autodelete_secs;
                    let deleting_at = (autodelete > 0)
                        .then(|| tick + TimeDelta::seconds(autodelete as i64));
                    let mark = decision.mark_dormant.expect("marked dormant");
                    prop_assert_eq!((mark.dormant_at, mark.deleting_at), (tick, deleting_at));
                    let running = workspace.latest_build.transition == Transition::Start;
                    prop_assert_eq!(decision.transition, running.then_some(Transition::Stop));
                }
                None => prop_assert_eq!(decision.transition, None),
            }
        }
    }

    /// Autostop liveness on a workspace built to need it (random snapshots rarely line all
    /// conditions up): a succeeded start, not dormant, at or past its deadline is stopped.
    #[test]
    fn a_started_workspace_past_its_deadline_is_stopped(
        (now, snapshot) in case_strategy(),
        past in prop_oneof![Just(0i64), 0i64..(3 * 24 * 60)],
    ) {
        let tick = DateTime::from_timestamp(now.timestamp().div_euclid(60) * 60, 0)
            .expect("range");
        let mut workspace = snapshot.workspaces[0].clone();
        workspace.is_prebuild = false;
        workspace.dormant_at = None;
        workspace.latest_build.transition = Transition::Start;
        workspace.latest_build.job_status = JobStatus::Succeeded;
        workspace.latest_build.deadline = Some(tick - minutes(past));
        let decision = decide(&workspace, now);
        prop_assert_eq!(decision.reason, Some(Reason::Autostop), "{}", decision.why);
        prop_assert_eq!(decision.transition, Some(Transition::Stop));
    }
}

proptest! {
    #![proptest_config(proptest_config("lifecycle_edge_props", 500))]

    /// The strict thresholds against the model, with the workspace moved onto the edge (a
    /// minute, half a minute or a second either side, or exactly on it), where random
    /// snapshots almost never land: failed-build stop `tick − job_completed_at >
    /// failure_ttl`, auto-delete `tick > deleting_at`, and the retry of a failed delete only
    /// more than 24 h after it failed.
    #[test]
    fn strict_thresholds_hold_at_their_edges(
        (now, snapshot) in case_strategy(),
        edge in 0u8..3,
        off in select(vec![-60i64, -30, -1, 0, 1, 30, 60]),
    ) {
        let tick = DateTime::from_timestamp(now.timestamp().div_euclid(60) * 60, 0)
            .expect("range");
        let mut workspace = snapshot.workspaces[0].clone();
        workspace.is_prebuild = false;
        let off = TimeDelta::seconds(off);
        let build = &mut workspace.latest_build;
        match edge {
            0 => {
                if workspace.template.failure_ttl_secs == 0 {
                    workspace.template.failure_ttl_secs = HOUR;
                }
                let ttl = TimeDelta::seconds(workspace.template.failure_ttl_secs as i64);
                build.job_status = JobStatus::Failed;
                build.job_completed_at = Some(tick - ttl + off);
            }
            _ => {
                if workspace.template.time_til_dormant_autodelete_secs == 0 {
                    workspace.template.time_til_dormant_autodelete_secs = DAY;
                }
                workspace.dormant_at = Some(tick - TimeDelta::days(3));
                if edge == 1 {
                    workspace.deleting_at = Some(tick + off);
                } else {
                    workspace.deleting_at = Some(tick - TimeDelta::days(2));
                    build.transition = Transition::Delete;
                    build.job_status = JobStatus::Failed;
                    build.job_completed_at = Some(tick - TimeDelta::hours(24) + off);
                }
            }
        }
        let Some(expected) = model_reason(&workspace, now) else { return Ok(()) };
        let decision = decide(&workspace, now);
        prop_assert_eq!(decision.reason, expected, "{:?} at {}: {}", workspace, now, decision.why);
    }
}
