//! The lifecycle decision: docs/replay-format.md output `lifecycle[]`.

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

/// Which step of rules §2 settled a decision: one of the five rules, a precondition that stops
/// the rules from being tried, or `none` when every rule was tried and none matched.
/// (An explanation field: docs/replay-format.md allows extra output fields.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Owned by the prebuilds system user: the reconciler decides, not the lifecycle.
    Prebuild,
    /// The latest build is a succeeded delete: the workspace is gone.
    Deleted,
    /// The latest build's job is pending, running or canceling.
    InFlight,
    Autostop,
    Autostart,
    Failedstop,
    Dormancy,
    Autodelete,
    /// Every rule was tried and none matched (also what a decision recorded without a `rule`
    /// field reads back as).
    #[default]
    None,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Prebuild => "prebuild",
            Rule::Deleted => "deleted",
            Rule::InFlight => "in_flight",
            Rule::Autostop => "autostop",
            Rule::Autostart => "autostart",
            Rule::Failedstop => "failedstop",
            Rule::Dormancy => "dormancy",
            Rule::Autodelete => "autodelete",
            Rule::None => "none",
        }
    }
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
    /// Explanation: the step of rules §2 that settled this decision.
    #[serde(default)]
    pub rule: Rule,
    /// Human-readable explanation: the rule that fired, or why none did.
    pub why: String,
}

impl Decision {
    /// True when the shell has something to write for this workspace.
    pub fn has_effect(&self) -> bool {
        self.transition.is_some() || self.mark_dormant.is_some() || self.next_start_at.is_some()
    }
}
