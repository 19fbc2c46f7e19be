//! Pool-wide series (per-preset pool figures, pause, jobs): one value swapped in whole by
//! the prebuild cycle and encoded at scrape time, so a scrape never touches the database,
//! never sees half a cycle's update, and a preset absent from the latest cycle has no
//! series at all (a deleted template, a superseded version).

use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::metrics::PresetLabels;

/// Totals derived from the database's build history (counters: they only grow).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrebuildTotals {
    pub created: u64,
    pub failed: u64,
    pub claimed: u64,
    pub resource_replacements: u64,
}

/// One preset's series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresetSeries {
    pub labels: PresetLabels,
    pub desired: i64,
    pub running: i64,
    pub eligible: i64,
    pub hard_limited: bool,
    pub validation_failed: bool,
    /// `None` while the totals could not be read yet.
    pub totals: Option<PrebuildTotals>,
}

/// The pool as of one prebuild cycle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolState {
    pub paused: bool,
    pub presets: Vec<PresetSeries>,
    /// Unfinished provisioner jobs by status (pending, running, canceling; zeros included);
    /// `None` if unread.
    pub jobs_by_status: Option<Vec<(String, i64)>>,
}

impl PoolState {
    /// Jobs waiting for a provisioner.
    pub fn queue_depth(&self) -> Option<i64> {
        let jobs = self.jobs_by_status.as_ref()?;
        Some(jobs.iter().filter(|(status, _)| status == "pending").map(|(_, n)| n).sum())
    }
}

/// Shared slot: the prebuild loop writes, the scrape reads. `None` (before the first cycle,
/// or on a replica that does not lead the prebuild loop) exports descriptors only, so
/// replicas never report the same pool twice.
#[derive(Debug, Clone, Default)]
pub struct PoolStateSlot(Arc<RwLock<Option<PoolState>>>);

impl PoolStateSlot {
    pub fn set(&self, state: Option<PoolState>) {
        let mut slot = match self.0.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = state;
    }

    pub fn get(&self) -> Option<PoolState> {
        match self.0.read() {
            Ok(slot) => slot.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

type Field = fn(&PresetSeries) -> Option<i64>;

/// (name, help, type, value) of each per-preset family.
const PRESET_FAMILIES: &[(&str, &str, MetricType, Field)] = &[
    ("prebuilds_created", "Prebuilds created per preset", MetricType::Counter, |p| {
        p.totals.map(|t| count(t.created))
    }),
    ("prebuilds_failed", "Prebuilds whose first build failed", MetricType::Counter, |p| {
        p.totals.map(|t| count(t.failed))
    }),
    ("prebuilds_claimed", "Prebuilds claimed by a user", MetricType::Counter, |p| {
        p.totals.map(|t| count(t.claimed))
    }),
    (
        "prebuilds_resource_replacements",
        "Claims that re-created some of the prebuild's resources",
        MetricType::Counter,
        |p| p.totals.map(|t| count(t.resource_replacements)),
    ),
    ("prebuilds_desired", "Desired prebuilds per preset", MetricType::Gauge, |p| Some(p.desired)),
    ("prebuilds_running", "Running prebuilds per preset", MetricType::Gauge, |p| Some(p.running)),
    ("prebuilds_eligible", "Ready, claimable prebuilds per preset", MetricType::Gauge, |p| {
        Some(p.eligible)
    }),
    (
        "prebuilds_hard_limited",
        "1 when the preset hit its failure hard limit",
        MetricType::Gauge,
        |p| Some(i64::from(p.hard_limited)),
    ),
    (
        "prebuilds_validation_failed",
        "1 when the preset's prebuilds are stopped by a failed validation",
        MetricType::Gauge,
        |p| Some(i64::from(p.validation_failed)),
    ),
];

impl Collector for PoolStateSlot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = self.get();
        let presets = state.as_ref().map(|s| s.presets.as_slice()).unwrap_or_default();
        for (name, help, metric_type, field) in PRESET_FAMILIES {
            let mut family = encoder.encode_descriptor(name, help, None, *metric_type)?;
            for preset in presets {
                let Some(value) = field(preset) else { continue };
                let sample = family.encode_family(&preset.labels)?;
                match metric_type {
                    MetricType::Counter => {
                        ConstCounter::new(u64::try_from(value).unwrap_or(0)).encode(sample)?;
                    }
                    _ => ConstGauge::new(value).encode(sample)?,
                }
            }
        }
        let paused = state.as_ref().map(|s| i64::from(s.paused));
        let depth = state.as_ref().and_then(PoolState::queue_depth);
        for (name, help, value) in [
            ("reconciliation_paused", "1 while prebuild reconciliation is paused", paused),
            ("job_queue_depth", "Provisioner jobs waiting for a provisioner", depth),
        ] {
            let family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            if let Some(value) = value {
                ConstGauge::new(value).encode(family)?;
            }
        }
        let mut jobs = encoder.encode_descriptor(
            "jobs",
            "Unfinished provisioner jobs by status (pending, running, canceling)",
            None,
            MetricType::Gauge,
        )?;
        let by_status =
            state.as_ref().and_then(|s| s.jobs_by_status.as_deref()).unwrap_or_default();
        for (status, count) in by_status {
            let labels = [("status", status.as_str())];
            ConstGauge::new(*count).encode(jobs.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// A label value safe inside the text format's double quotes (the encoder writes values
/// verbatim; a template name with a quote would otherwise break the whole scrape).
pub fn label_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(label_value("plain"), "plain");
    }
}
