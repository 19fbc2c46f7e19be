//! The simulated backend: no external effect, only time passing. Deterministic: whether a
//! job fails depends on (seed, job id) alone, so a replayed run fails the same jobs.

use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{agent_names, AgentSpec, BuildFailure, BuildOutput};
use crate::db::enums::{BuildReason, Transition};
use crate::provisioner::context::JobContext;
use crate::provisioner::BackendError;

/// Defaults; a version's `source` may override each (`duration_ms`, `failure_rate`,
/// `agent_start_secs`, `agents`). A source may also declare simulated `resources` (names)
/// and which of them a claim re-creates (`replace_on_claim`), as a module whose resources
/// depend on the owner would: the state records them in terraform's shape, so completion
/// detects the replacement the same way for both backends.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedConfig {
    pub duration: Duration,
    /// 0.0 = never fails, 1.0 = always fails.
    pub failure_rate: f64,
    pub agent_start: Duration,
    pub seed: u64,
}

impl Default for SimulatedConfig {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(2),
            failure_rate: 0.0,
            agent_start: Duration::ZERO,
            seed: 0,
        }
    }
}

/// The effective settings for one version's source.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    duration: Duration,
    failure_rate: f64,
    agent_start_secs: u64,
    agents: Vec<String>,
    resources: Vec<String>,
    replace_on_claim: Vec<String>,
}

/// A list of non-empty names under `field`; absent = none.
fn names(source: &Value, field: &str) -> Result<Vec<String>, BackendError> {
    let invalid = || BackendError::InvalidSource(format!("{field}: expected a list of names"));
    match source.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str().filter(|n| !n.is_empty()).map(str::to_owned).ok_or_else(invalid)
            })
            .collect(),
        Some(_) => Err(invalid()),
    }
}

fn settings(config: &SimulatedConfig, source: &Value) -> Result<Settings, BackendError> {
    let invalid = |field: &str| BackendError::InvalidSource(format!("{field}: expected a number"));
    // Templates files declare `duration_secs` (fractional seconds); `duration_ms` is kept for
    // sources written by hand.
    let duration = match (source.get("duration_secs"), source.get("duration_ms")) {
        (Some(v), _) if !v.is_null() => {
            let secs = v.as_f64().filter(|s| s.is_finite() && *s >= 0.0);
            Duration::from_secs_f64(secs.ok_or_else(|| invalid("duration_secs"))?)
        }
        (_, None | Some(Value::Null)) => config.duration,
        (_, Some(v)) => Duration::from_millis(v.as_u64().ok_or_else(|| invalid("duration_ms"))?),
    };
    let failure_rate = match source.get("failure_rate") {
        None | Some(Value::Null) => config.failure_rate,
        Some(v) => v.as_f64().ok_or_else(|| invalid("failure_rate"))?,
    };
    if !(0.0..=1.0).contains(&failure_rate) {
        return Err(BackendError::InvalidSource(format!(
            "failure_rate: {failure_rate} is not between 0 and 1"
        )));
    }
    // Templates files allow fractional seconds; an agent is ready at the next whole second.
    let agent_start_secs = match source.get("agent_start_secs") {
        None | Some(Value::Null) => config.agent_start.as_secs(),
        Some(v) => v
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s <= u32::MAX as f64)
            .map(|s| s.ceil() as u64)
            .ok_or_else(|| invalid("agent_start_secs"))?,
    };
    Ok(Settings {
        duration,
        failure_rate,
        agent_start_secs,
        agents: agent_names(source)?,
        resources: names(source, "resources")?,
        replace_on_claim: names(source, "replace_on_claim")?,
    })
}

/// How long a simulated agent of a version with this `source` takes to become ready (the
/// configured default when the source does not say, or says something invalid).
pub fn agent_start_secs(config: &SimulatedConfig, source: &Value) -> u64 {
    settings(config, source).map_or(config.agent_start.as_secs(), |s| s.agent_start_secs)
}

/// A number in [0, 1) from (seed, job id): splitmix64 over the id's two halves.
pub fn failure_draw(seed: u64, job_id: Uuid) -> f64 {
    let (hi, lo) = job_id.as_u64_pair();
    let mut x = seed;
    for part in [hi, lo] {
        x = splitmix64(x ^ part);
    }
    // 53 random bits → an exactly representable fraction.
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

pub async fn run(
    config: &SimulatedConfig,
    ctx: &JobContext,
    cancel: &CancellationToken,
) -> Result<BuildOutput, BuildFailure> {
    let settings = settings(config, &ctx.version.source)?;
    if cancel.is_cancelled() {
        return Err(BackendError::Canceled.into());
    }
    // A build that takes no time does not wait for the timer: a zero sleep still ends only
    // at the timer's next tick (about a millisecond), longer than the rest of the job.
    if !settings.duration.is_zero() {
        tokio::select! {
            () = cancel.cancelled() => return Err(BackendError::Canceled.into()),
            () = tokio::time::sleep(settings.duration) => {}
        }
    }
    if failure_draw(config.seed, ctx.job.id) < settings.failure_rate {
        return Err(BackendError::SimulatedFailure {
            seed: config.seed,
            rate: settings.failure_rate,
        }
        .into());
    }
    let transition = ctx.build.transition;
    let prior = prior_ids(ctx.build.provisioner_state.as_deref());
    let claimed = ctx.build.reason == BuildReason::Claim;
    let resources: Vec<Value> = match transition {
        Transition::Delete => Vec::new(),
        Transition::Start | Transition::Stop => settings
            .resources
            .iter()
            .map(|name| {
                let replaced = claimed && settings.replace_on_claim.contains(name);
                let id = match prior.get(name) {
                    Some(id) if !replaced => id.clone(),
                    _ => format!("{name}-{}", ctx.job.id.simple()),
                };
                serde_json::json!({
                    "mode": "managed",
                    "type": "simulated_resource",
                    "name": name,
                    "instances": [{ "attributes": { "id": id } }],
                })
            })
            .collect(),
    };
    let state = serde_json::json!({
        "simulated": true,
        "workspace_id": ctx.workspace.id,
        "transition": transition.as_str(),
        "resources": resources,
    });
    let agents = match transition {
        Transition::Start => settings
            .agents
            .into_iter()
            .map(|name| AgentSpec { name, start_secs: settings.agent_start_secs })
            .collect(),
        Transition::Stop | Transition::Delete => Vec::new(),
    };
    Ok(BuildOutput { state: Some(state.to_string().into_bytes()), agents })
}

/// Resource name → id in a previous simulated state (none when absent or unreadable).
fn prior_ids(state: Option<&[u8]>) -> std::collections::BTreeMap<String, String> {
    let value: Value = state.and_then(|s| serde_json::from_slice(s).ok()).unwrap_or(Value::Null);
    let resources = value.get("resources").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    resources
        .iter()
        .filter_map(|r| {
            let name = r.get("name")?.as_str()?;
            let id = r.get("instances")?.get(0)?.get("attributes")?.get("id")?.as_str()?;
            Some((name.to_owned(), id.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_draw_is_deterministic_and_spread() {
        let id = Uuid::from_u128(42);
        assert_eq!(failure_draw(7, id), failure_draw(7, id));
        assert_ne!(failure_draw(7, id), failure_draw(8, id));
        let failures = (0..1000u128).filter(|i| failure_draw(1, Uuid::from_u128(*i)) < 0.3).count();
        assert!((200..400).contains(&failures), "{failures}");
    }

    #[test]
    fn templates_file_duration_secs_is_honoured() {
        let source = serde_json::json!({"duration_secs": 1.5});
        let s = settings(&SimulatedConfig::default(), &source).expect("valid");
        assert_eq!(s.duration, Duration::from_millis(1500));
        let bad = serde_json::json!({"duration_secs": -1.0});
        assert!(settings(&SimulatedConfig::default(), &bad).is_err());
    }

    #[test]
    fn source_overrides_defaults() {
        let source = serde_json::json!({"duration_ms": 5, "failure_rate": 1.0, "agents": ["a"]});
        let s = settings(&SimulatedConfig::default(), &source).expect("valid");
        assert_eq!(s.duration, Duration::from_millis(5));
        assert_eq!(s.failure_rate, 1.0);
        assert_eq!(s.agents, vec!["a".to_owned()]);
        assert!(s.resources.is_empty() && s.replace_on_claim.is_empty());
        let with = serde_json::json!({"resources": ["vm", "home"], "replace_on_claim": ["vm"]});
        let s = settings(&SimulatedConfig::default(), &with).expect("valid");
        assert_eq!((s.resources.len(), s.replace_on_claim), (2, vec!["vm".to_owned()]));
        let bad = serde_json::json!({"resources": "vm"});
        assert!(settings(&SimulatedConfig::default(), &bad).is_err());
        let bad = serde_json::json!({"failure_rate": 2.0});
        assert!(settings(&SimulatedConfig::default(), &bad).is_err());
    }
}
