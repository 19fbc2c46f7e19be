//! Build backends, chosen per template version (`template_versions.provisioner`).

pub mod simulated;
pub mod terraform;

use std::collections::BTreeMap;

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

/// One resource instance of a state: `type.name` or `type.name[key]`, and its identity.
fn resource_ids(state: &[u8]) -> BTreeMap<String, String> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(state) else {
        return BTreeMap::new();
    };
    let mut ids = BTreeMap::new();
    let resources =
        value.get("resources").and_then(|r| r.as_array()).map_or(&[][..], Vec::as_slice);
    for resource in resources {
        // Data sources are read, never created: they cannot be replaced.
        if resource.get("mode").and_then(|m| m.as_str()) != Some("managed") {
            continue;
        }
        let kind = resource.get("type").and_then(|t| t.as_str()).unwrap_or_default();
        let name = resource.get("name").and_then(|n| n.as_str()).unwrap_or_default();
        let instances =
            resource.get("instances").and_then(|i| i.as_array()).map_or(&[][..], Vec::as_slice);
        for instance in instances {
            let address = match instance.get("index_key") {
                None | Some(serde_json::Value::Null) => format!("{kind}.{name}"),
                Some(key) => format!("{kind}.{name}[{key}]"),
            };
            let id = instance.get("attributes").and_then(|a| a.get("id"));
            if let Some(id) = id.filter(|id| !id.is_null()) {
                ids.insert(address, id.to_string());
            }
        }
    }
    ids
}

/// The resources a build replaced: present before and after, with a different identity
/// (destroyed and re-created). Both backends write terraform's state shape
/// (`resources[].instances[].attributes.id`), so one comparison serves both; an unreadable
/// or absent state has no resources.
pub fn replaced_resources(before: Option<&[u8]>, after: Option<&[u8]>) -> Vec<String> {
    let (Some(before), Some(after)) = (before, after) else { return Vec::new() };
    let before = resource_ids(before);
    let after = resource_ids(after);
    before
        .into_iter()
        .filter(|(address, id)| after.get(address).is_some_and(|new| new != id))
        .map(|(address, _)| address)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(resources: serde_json::Value) -> Vec<u8> {
        serde_json::json!({ "version": 4, "resources": resources }).to_string().into_bytes()
    }

    #[test]
    fn a_changed_id_is_a_replacement() {
        let before = state(serde_json::json!([
            {"mode": "managed", "type": "vm", "name": "main", "instances": [{"attributes": {"id": "a"}}]},
            {"mode": "managed", "type": "disk", "name": "home", "instances": [{"attributes": {"id": "d"}}]},
            {"mode": "managed", "type": "vm", "name": "pool", "instances": [
                {"index_key": 0, "attributes": {"id": "p0"}},
                {"index_key": 1, "attributes": {"id": "p1"}}
            ]},
            {"mode": "data", "type": "img", "name": "base", "instances": [{"attributes": {"id": "i"}}]},
            {"mode": "managed", "type": "gone", "name": "x", "instances": [{"attributes": {"id": "g"}}]}
        ]));
        let after = state(serde_json::json!([
            {"mode": "managed", "type": "vm", "name": "main", "instances": [{"attributes": {"id": "b"}}]},
            {"mode": "managed", "type": "disk", "name": "home", "instances": [{"attributes": {"id": "d"}}]},
            {"mode": "managed", "type": "vm", "name": "pool", "instances": [
                {"index_key": 0, "attributes": {"id": "p0"}},
                {"index_key": 1, "attributes": {"id": "p9"}}
            ]},
            {"mode": "data", "type": "img", "name": "base", "instances": [{"attributes": {"id": "j"}}]},
            {"mode": "managed", "type": "new", "name": "y", "instances": [{"attributes": {"id": "n"}}]}
        ]));
        assert_eq!(
            replaced_resources(Some(&before), Some(&after)),
            vec!["vm.main".to_owned(), "vm.pool[1]".to_owned()]
        );
        assert!(replaced_resources(Some(&before), Some(&before)).is_empty());
        assert!(replaced_resources(None, Some(&after)).is_empty());
        assert!(replaced_resources(Some(b"not json"), Some(&after)).is_empty());
    }
}
