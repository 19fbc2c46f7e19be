//! Everything a backend needs to know about a job, read once after acquisition (outside any
//! transaction, so none is held while the backend runs).

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::ProvisionerError;
use crate::db::models::{ProvisionerJob, TemplateVersion, User, Workspace, WorkspaceBuild};
use crate::db::schema::{
    preset_parameters, template_versions, users, workspace_builds, workspaces,
};

#[derive(Debug, Clone)]
pub struct JobContext {
    pub job: ProvisionerJob,
    pub build: WorkspaceBuild,
    pub workspace: Workspace,
    pub version: TemplateVersion,
    pub owner: User,
    /// The preset's parameters (name, value), sorted by name.
    pub parameters: Vec<(String, String)>,
}

pub async fn load_context(
    conn: &mut AsyncPgConnection,
    job: ProvisionerJob,
) -> Result<JobContext, ProvisionerError> {
    let build: WorkspaceBuild = workspace_builds::table
        .filter(workspace_builds::job_id.eq(job.id))
        .select(WorkspaceBuild::as_select())
        .get_result(conn)
        .await
        .optional()?
        .ok_or(ProvisionerError::MissingBuild { job_id: job.id })?;
    let workspace: Workspace = workspaces::table
        .find(build.workspace_id)
        .select(Workspace::as_select())
        .get_result(conn)
        .await?;
    let version: TemplateVersion = template_versions::table
        .find(build.template_version_id)
        .select(TemplateVersion::as_select())
        .get_result(conn)
        .await?;
    let owner: User =
        users::table.find(workspace.owner_id).select(User::as_select()).get_result(conn).await?;
    let parameters = match build.preset_id {
        Some(preset_id) => {
            preset_parameters::table
                .filter(preset_parameters::preset_id.eq(preset_id))
                .order(preset_parameters::name)
                .select((preset_parameters::name, preset_parameters::value))
                .load(conn)
                .await?
        }
        None => Vec::new(),
    };
    Ok(JobContext { job, build, workspace, version, owner, parameters })
}
