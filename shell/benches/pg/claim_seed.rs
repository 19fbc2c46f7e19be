//! What the claim benchmark adds to a prebuild scenario, in bulk: the history of claimed
//! workspaces (people's builds carry the preset they were claimed from) and one preset with a
//! pool large enough for every claimer to claim from it at once.

use anyhow::{Context, Result};
use poolkeeper::db::{DEFAULT_ORGANIZATION_ID, PREBUILDS_USER_ID};
use uuid::Uuid;

use crate::claim::PresetRow;
use crate::server;

/// Builds per claimed workspace of the history: its prebuild start, the claim, then
/// autostops and autostarts.
const BUILDS_PER_WORKSPACE: u64 = 10;
const HISTORY_OWNER: Uuid = Uuid::from_u128(0x5eed0000_0000_4000_8000_000000000001);

/// `builds` builds of claimed workspaces, every build with its succeeded job and its
/// preset, the workspaces spread evenly over the scenario's presets; the latest build of
/// each is a succeeded start (a running workspace of a person).
pub async fn history(url: &str, builds: u64) -> Result<()> {
    let per = BUILDS_PER_WORKSPACE.min(builds).max(1);
    let workspaces = builds.div_ceil(per);
    let org = DEFAULT_ORGANIZATION_ID;
    let prebuilds = PREBUILDS_USER_ID;
    let owner = HISTORY_OWNER;
    server::execute(
        url,
        &format!(
            "BEGIN;
             INSERT INTO users (id, username) VALUES ('{owner}', 'history-owner');
             CREATE TEMP TABLE history_workspaces AS
             SELECT md5('history-ws-' || i)::uuid AS id, p.id AS preset_id,
                    p.template_version_id AS version_id, v.template_id
             FROM generate_series(1, {workspaces}) i
             JOIN (SELECT id, template_version_id,
                          row_number() OVER (ORDER BY id) - 1 AS n, count(*) OVER () AS total
                   FROM presets) p ON p.n = i % p.total
             JOIN template_versions v ON v.id = p.template_version_id;
             INSERT INTO workspaces (id, organization_id, owner_id, template_id, name,
                                     last_used_at, created_at, updated_at)
             SELECT id, '{org}', '{owner}', template_id, 'history-' || id,
                    now() - interval '30 days', now() - interval '30 days',
                    now() - interval '30 days'
             FROM history_workspaces;
             CREATE TEMP TABLE history_builds AS
             SELECT w.id AS workspace_id, w.preset_id, w.version_id, n,
                    md5('history-job-' || w.id || '-' || n)::uuid AS job_id,
                    CASE WHEN n <= 2 OR n % 2 = 0 THEN 'start' ELSE 'stop' END AS transition,
                    CASE WHEN n = 1 THEN 'prebuild' WHEN n = 2 THEN 'claim'
                         WHEN n % 2 = 0 THEN 'autostart' ELSE 'autostop' END AS reason,
                    CASE WHEN n = 1 THEN '{prebuilds}'::uuid ELSE '{owner}'::uuid END
                      AS initiator_id,
                    now() - interval '30 days' + n * interval '1 hour' AS at
             FROM history_workspaces w, generate_series(1, {per}) n;
             INSERT INTO provisioner_jobs (id, organization_id, status, created_at, started_at,
                                           completed_at, for_prebuild, transition)
             SELECT job_id, '{org}', 'succeeded', at, at, at, n = 1, transition
             FROM history_builds;
             INSERT INTO workspace_builds (workspace_id, build_number, template_version_id,
                                           preset_id, transition, reason, initiator_id, job_id,
                                           created_at)
             SELECT workspace_id, n, version_id, preset_id, transition, reason, initiator_id,
                    job_id, at
             FROM history_builds;
             COMMIT;"
        ),
    )
    .await
    .context("seed the claim history")?;
    // Autovacuum would have caught up with a history this old; the plans assume it.
    server::execute(url, "VACUUM ANALYZE").await
}

/// A preset of the first template's active version with `size` ready prebuilds (a minute
/// apart, so the core's order is the creation order), for claimers that all want one preset.
pub async fn hot_preset(url: &str, size: usize) -> Result<PresetRow> {
    let preset_id = Uuid::from_u128(0x5eed0000_0000_4000_8000_000000000002);
    let org = DEFAULT_ORGANIZATION_ID;
    let prebuilds = PREBUILDS_USER_ID;
    server::execute(
        url,
        &format!(
            "BEGIN;
             CREATE TEMP TABLE hot_template AS
             SELECT id AS template_id, name, active_version_id AS version_id
             FROM templates ORDER BY name LIMIT 1;
             INSERT INTO presets (id, template_version_id, name, desired_instances)
             SELECT '{preset_id}', version_id, 'hot', {size} FROM hot_template;
             CREATE TEMP TABLE hot_prebuilds AS
             SELECT md5('hot-ws-' || i)::uuid AS id, md5('hot-job-' || i)::uuid AS job_id,
                    md5('hot-build-' || i)::uuid AS build_id,
                    now() - interval '1 hour' + i * interval '1 second' AS at
             FROM generate_series(1, {size}) i;
             INSERT INTO workspaces (id, organization_id, owner_id, template_id, name,
                                     last_used_at, created_at, updated_at)
             SELECT p.id, '{org}', '{prebuilds}', t.template_id, 'hot-' || p.id, p.at, p.at, p.at
             FROM hot_prebuilds p, hot_template t;
             INSERT INTO provisioner_jobs (id, organization_id, status, created_at, started_at,
                                           completed_at, for_prebuild, transition)
             SELECT job_id, '{org}', 'succeeded', at, at, at, true, 'start' FROM hot_prebuilds;
             INSERT INTO workspace_builds (id, workspace_id, build_number, template_version_id,
                                           preset_id, transition, reason, initiator_id, job_id,
                                           created_at)
             SELECT p.build_id, p.id, 1, t.version_id, '{preset_id}', 'start', 'prebuild',
                    '{prebuilds}', p.job_id, p.at
             FROM hot_prebuilds p, hot_template t;
             INSERT INTO workspace_agents (build_id, name, lifecycle_state, ready_at)
             SELECT build_id, 'main', 'ready', at FROM hot_prebuilds;
             COMMIT;
             ANALYZE workspaces, workspace_builds, provisioner_jobs, workspace_agents;"
        ),
    )
    .await
    .context("seed the one-preset pool")?;
    let mut conn = server::connect(url).await?;
    let row: PresetRow = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query(
            "SELECT p.id AS preset_id, v.template_id, p.name AS preset, t.name AS template
             FROM presets p JOIN template_versions v ON v.id = p.template_version_id
             JOIN templates t ON t.id = v.template_id WHERE p.id = $1",
        )
        .bind::<diesel::sql_types::Uuid, _>(preset_id),
        &mut conn,
    )
    .await
    .context("read the one-preset pool")?;
    Ok(row)
}
