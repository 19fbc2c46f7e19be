//! The lifecycle decision: REPLAY.md output `lifecycle[]`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::build::Transition;

/// Why a transition was decided (also the build's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    Autostart,
    Autostop,
    Failedstop,
    Dormancy,
    Autodelete,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Autostart => "autostart",
            Reason::Autostop => "autostop",
            Reason::Failedstop => "failedstop",
            Reason::Dormancy => "dormancy",
            Reason::Autodelete => "autodelete",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkDormant {
    pub dormant_at: DateTime<Utc>,
    pub deleting_at: Option<DateTime<Utc>>,
}

/// What to do with one workspace at one tick, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub workspace_id: Uuid,
    pub transition: Option<Transition>,
    pub reason: Option<Reason>,
    /// The start build moves to the template's active version.
    pub use_active_version: bool,
    pub mark_dormant: Option<MarkDormant>,
    /// Set when the core (re)computed the workspace's next autostart.
    pub next_start_at: Option<DateTime<Utc>>,
    /// Human-readable explanation: the rule that fired, or why none did.
    pub why: String,
}

impl Decision {
    /// True when the shell has something to write for this workspace.
    pub fn has_effect(&self) -> bool {
        self.transition.is_some() || self.mark_dormant.is_some() || self.next_start_at.is_some()
    }
}
