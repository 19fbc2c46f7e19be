//! The replay file envelope (docs/replay-format.md): parse and validate the input, run the core, shape the
//! output. `poolkeeper replay`, the daemon's flight recorder and `poolkeeper snapshot` all use
//! these types, so a recorded cycle replays bit for bit.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lifecycle::{self, LifecycleSnapshot};
use crate::prebuilds::{self, PrebuildSnapshot};
use crate::schedule::{
    self, ActivityReport, ActivityResult, BuildCompletion, BuildCompletionResult,
};

pub const INPUT_FORMAT: &str = "poolkeeper.replay/v1";
pub const OUTPUT_FORMAT: &str = "poolkeeper.decisions/v1";

/// A replay file: everything the core needs for one cycle's decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayInput {
    pub format: String,
    pub now: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<LifecycleSnapshot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prebuilds: Option<PrebuildSnapshot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_completions: Option<Vec<BuildCompletion>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<Vec<ActivityReport>>,
}

impl ReplayInput {
    /// An empty replay input at `now`, to be filled by a recorder.
    pub fn new(now: DateTime<Utc>) -> ReplayInput {
        ReplayInput {
            format: INPUT_FORMAT.to_owned(),
            now,
            lifecycle: None,
            prebuilds: None,
            build_completions: None,
            activity: None,
        }
    }
}

/// The decisions for one replay input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayOutput {
    pub format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Vec<lifecycle::Decision>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prebuilds: Option<Vec<prebuilds::PresetPlan>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_completions: Option<Vec<BuildCompletionResult>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<Vec<ActivityResult>>,
}

/// An invalid replay file. `path` is the JSON path of the offending field
/// (e.g. `prebuilds.presets[3].schedules[0].cron`), or `$` for the document itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ReplayError {
    pub path: String,
    pub message: String,
}

impl ReplayError {
    fn at(path: impl Into<String>, message: impl Into<String>) -> ReplayError {
        ReplayError { path: path.into(), message: message.into() }
    }
}

/// Parses and validates a replay file.
pub fn parse_replay(text: &str) -> Result<ReplayInput, ReplayError> {
    let deserializer = &mut serde_json::Deserializer::from_str(text);
    let input: ReplayInput = serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let path = if path == "." || path.is_empty() { "$".to_owned() } else { path };
        ReplayError::at(path, err.into_inner().to_string())
    })?;
    validate(&input)?;
    Ok(input)
}

/// Checks what the types alone cannot: the format tag and unique ids. Schedules are not
/// checked: a replay file must accept whatever a recorded snapshot can hold, and the core
/// explains a bad one instead of failing (an autostart schedule that does not parse starts
/// nothing; invalid prebuild schedules fall back to the default count), exactly as it does
/// for a bad row in the database.
pub fn validate(input: &ReplayInput) -> Result<(), ReplayError> {
    if input.format != INPUT_FORMAT {
        return Err(ReplayError::at(
            "format",
            format!("expected {INPUT_FORMAT:?}, found {:?}", input.format),
        ));
    }
    if let Some(snapshot) = &input.lifecycle {
        let mut seen = HashSet::new();
        for (index, workspace) in snapshot.workspaces.iter().enumerate() {
            if !seen.insert(workspace.id) {
                return Err(ReplayError::at(
                    format!("lifecycle.workspaces[{index}].id"),
                    format!("duplicate workspace id {}", workspace.id),
                ));
            }
        }
    }
    if let Some(snapshot) = &input.prebuilds {
        let mut seen = HashSet::new();
        for (index, preset) in snapshot.presets.iter().enumerate() {
            if !seen.insert(preset.id) {
                return Err(ReplayError::at(
                    format!("prebuilds.presets[{index}].id"),
                    format!("duplicate preset id {}", preset.id),
                ));
            }
            if let Some(Err((field, message))) = preset.autoscale.map(|a| a.check()) {
                return Err(ReplayError::at(
                    format!("prebuilds.presets[{index}].autoscale.{field}"),
                    message,
                ));
            }
        }
    }
    Ok(())
}

/// Runs the core on a validated input.
pub fn run_replay(input: &ReplayInput) -> ReplayOutput {
    ReplayOutput {
        format: OUTPUT_FORMAT.to_owned(),
        lifecycle: input.lifecycle.as_ref().map(|snapshot| lifecycle::plan(input.now, snapshot)),
        prebuilds: input.prebuilds.as_ref().map(|snapshot| prebuilds::plan(input.now, snapshot)),
        build_completions: input
            .build_completions
            .as_ref()
            .map(|entries| entries.iter().map(schedule::complete_build).collect()),
        activity: input
            .activity
            .as_ref()
            .map(|entries| entries.iter().map(schedule::bump_activity).collect()),
    }
}
