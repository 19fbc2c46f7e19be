//! The daemon's metrics: per-preset pool gauges, cycle durations, lifecycle transitions.
//! Deliberately few series: one gauge family per pool counter, labelled by names a person
//! recognises (organization / template / preset).

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PresetLabels {
    pub organization: String,
    pub template: String,
    pub preset: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoopLabels {
    /// `prebuilds` or `lifecycle`.
    pub r#loop: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub transition: String,
    pub reason: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub prebuilds_desired: Family<PresetLabels, Gauge>,
    pub prebuilds_running: Family<PresetLabels, Gauge>,
    pub prebuilds_eligible: Family<PresetLabels, Gauge>,
    pub cycle_seconds: Family<LoopLabels, Histogram>,
    pub cycle_failures: Family<LoopLabels, Counter>,
    pub lifecycle_transitions: Family<TransitionLabels, Counter>,
    /// Time the API spends on one claim, from request to committed claim.
    pub claim_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("poolkeeper");
        let prebuilds_desired = Family::<PresetLabels, Gauge>::default();
        let prebuilds_running = Family::<PresetLabels, Gauge>::default();
        let prebuilds_eligible = Family::<PresetLabels, Gauge>::default();
        let cycle_seconds = Family::<LoopLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        let cycle_failures = Family::<LoopLabels, Counter>::default();
        let lifecycle_transitions = Family::<TransitionLabels, Counter>::default();
        let claim_seconds =
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        registry.register(
            "prebuilds_desired",
            "Desired prebuilds per preset",
            prebuilds_desired.clone(),
        );
        registry.register(
            "prebuilds_running",
            "Running prebuilds per preset",
            prebuilds_running.clone(),
        );
        registry.register(
            "prebuilds_eligible",
            "Ready, claimable prebuilds per preset",
            prebuilds_eligible.clone(),
        );
        registry.register(
            "cycle_duration_seconds",
            "Duration of one loop cycle",
            cycle_seconds.clone(),
        );
        registry.register("cycle_failures", "Cycles that failed", cycle_failures.clone());
        registry.register(
            "lifecycle_transitions",
            "Lifecycle builds queued",
            lifecycle_transitions.clone(),
        );
        registry.register(
            "claim_duration_seconds",
            "Duration of one prebuild claim through the API",
            claim_seconds.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            prebuilds_desired,
            prebuilds_running,
            prebuilds_eligible,
            cycle_seconds,
            cycle_failures,
            lifecycle_transitions,
            claim_seconds,
        }
    }

    pub fn loop_labels(name: &str) -> LoopLabels {
        LoopLabels { r#loop: name.to_owned() }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = match self.registry.lock() {
            Ok(registry) => registry,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}
