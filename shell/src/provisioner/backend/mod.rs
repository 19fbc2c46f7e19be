//! Build backends, chosen per template version (`template_versions.provisioner`).

pub mod simulated;
pub mod terraform;

use tokio_util::sync::CancellationToken;

use super::context::JobContext;
use super::BackendError;
use crate::db::enums::ProvisionerKind;

pub use simulated::SimulatedConfig;
pub use terraform::TerraformConfig;

/// An agent the build created; `start_secs` is how long it takes to report ready.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSpec {
    pub name: String,
    pub start_secs: u64,
}

/// What a successful backend run leaves behind.
#[derive(Debug, Clone, Default)]
pub struct BuildOutput {
    /// The backend's state of the workspace (kept on the build, handed to the next one).
    pub state: Option<Vec<u8>>,
    /// Agents of a start build; empty for stop and delete.
    pub agents: Vec<AgentSpec>,
}

/// A failed run; the state is kept when there is one (a half-applied terraform run).
#[derive(Debug)]
pub struct BuildFailure {
    pub error: BackendError,
    pub state: Option<Vec<u8>>,
}

impl From<BackendError> for BuildFailure {
    fn from(error: BackendError) -> Self {
        Self { error, state: None }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Backends {
    pub simulated: SimulatedConfig,
    pub terraform: TerraformConfig,
}

impl Backends {
    /// Run the job's build; returns early with [`BackendError::Canceled`] once `cancel` fires.
    pub async fn run(
        &self,
        ctx: &JobContext,
        cancel: &CancellationToken,
    ) -> Result<BuildOutput, BuildFailure> {
        match ctx.version.provisioner {
            ProvisionerKind::Simulated => simulated::run(&self.simulated, ctx, cancel).await,
            ProvisionerKind::Terraform => terraform::run(&self.terraform, ctx, cancel).await,
        }
    }
}

/// Agent names from a source's `agents` (a list of strings); default one agent, `main`.
pub(crate) fn agent_names(source: &serde_json::Value) -> Result<Vec<String>, BackendError> {
    match source.get("agents") {
        None | Some(serde_json::Value::Null) => Ok(vec!["main".to_owned()]),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned)
                    .ok_or_else(|| BackendError::InvalidSource("agents: expected names".into()))
            })
            .collect(),
        Some(_) => Err(BackendError::InvalidSource("agents: expected a list of names".into())),
    }
}
