//! Applying a preset's plan. Creates go in one batched transaction; each delete and each
//! cancel is its own short transaction that re-checks, under the workspace's row lock, that
//! the prebuild is still unclaimed and idle: a lost race (a claim, a provisioner that took
//! the job) is logged and skipped, never an error.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use poolkeeper_core::prebuilds::{Action, Preset, PresetPlan, PresetStatus};
use uuid::Uuid;

use super::create::Creates;
use crate::db::enums::{BuildReason, JobStatus, PrebuildStatus, Transition};
use crate::db::schema::{presets, provisioner_jobs, workspace_builds, workspaces};
use crate::db::{DbPool, PREBUILDS_USER_ID};
use crate::store::audit::{self, Actor, Change};
use crate::store::leases::Fence;
use crate::store::notifications::{enqueue, template_admins, Dedupe, Kind};
use crate::store::rows::{audit, insert_audit, insert_builds, BuildSpec};
use crate::store::StoreError;

/// The audit actor of this loop.
const LOOP: &str = "prebuilds";

/// Carries out `plan` for `preset`, in action order. Returns the ids of the jobs created
/// (already committed; see `store::publish`). Every transaction first checks `fence`: once
/// the lease has moved to another replica, nothing more is written ([`StoreError::Fenced`]).
pub async fn apply_preset_plan(
    pool: &DbPool,
    fence: &Fence,
    now: DateTime<Utc>,
    preset: &Preset,
    plan: &PresetPlan,
) -> Result<Vec<Uuid>, StoreError> {
    let mut jobs = Vec::new();
    for action in &plan.actions {
        match action {
            Action::Backoff { until } => {
                tracing::info!(preset_id = %preset.id, %until, "prebuild creation backing off");
            }
            Action::CancelPending => jobs.extend(cancel_pending(pool, fence, now, preset).await?),
            Action::Delete { workspace_ids } => {
                for &workspace_id in workspace_ids {
                    jobs.extend(delete_prebuild(pool, fence, now, preset, workspace_id).await?);
                }
            }
            Action::Create { count } => {
                jobs.extend(create_prebuilds(pool, fence, now, preset, *count).await?)
            }
            Action::SetStatus { status } => set_status(pool, fence, now, preset, *status).await?,
        }
    }
    Ok(jobs)
}

/// `count` new prebuilds of `preset`, in one transaction (see `create`).
async fn create_prebuilds(
    pool: &DbPool,
    fence: &Fence,
    now: DateTime<Utc>,
    preset: &Preset,
    count: u32,
) -> Result<Vec<Uuid>, StoreError> {
    let creates = vec![Creates { preset: preset.clone(), count }];
    let mut jobs = Vec::new();
    for batch in super::create::create_prebuilds(pool, fence, now, creates, 1).await {
        jobs.extend(batch.jobs?.into_values().flatten());
    }
    Ok(jobs)
}

/// (build number, transition, version, provisioner state, job id, job status).
type LatestBuildRow = (i32, Transition, Uuid, Option<Vec<u8>>, Uuid, JobStatus);

/// What the delete and cancel paths see of a workspace once its row is locked.
struct Locked {
    organization_id: Uuid,
    build_number: i32,
    build_transition: Transition,
    template_version_id: Uuid,
    provisioner_state: Option<Vec<u8>>,
    job_id: Uuid,
    job_status: JobStatus,
}

/// Locks the workspace row and reads its latest build, or `None` when it is no longer an
/// unclaimed, live prebuild (claimed, deleted, or without builds).
async fn lock_prebuild(
    conn: &mut AsyncPgConnection,
    workspace_id: Uuid,
) -> Result<Option<Locked>, diesel::result::Error> {
    let row: Option<(Uuid, Uuid, bool)> = workspaces::table
        .find(workspace_id)
        .select((workspaces::owner_id, workspaces::organization_id, workspaces::deleted))
        .for_update()
        .first(conn)
        .await
        .optional()?;
    let Some((owner_id, organization_id, deleted)) = row else { return Ok(None) };
    if owner_id != PREBUILDS_USER_ID || deleted {
        return Ok(None);
    }
    let latest: Option<LatestBuildRow> = workspace_builds::table
        .inner_join(provisioner_jobs::table)
        .filter(workspace_builds::workspace_id.eq(workspace_id))
        .order(workspace_builds::build_number.desc())
        .select((
            workspace_builds::build_number,
            workspace_builds::transition,
            workspace_builds::template_version_id,
            workspace_builds::provisioner_state,
            provisioner_jobs::id,
            provisioner_jobs::status,
        ))
        .first(conn)
        .await
        .optional()?;
    Ok(latest.map(
        |(
            build_number,
            build_transition,
            template_version_id,
            provisioner_state,
            job_id,
            job_status,
        )| {
            Locked {
                organization_id,
                build_number,
                build_transition,
                template_version_id,
                provisioner_state,
                job_id,
                job_status,
            }
        },
    ))
}

fn delete_spec(preset: &Preset, workspace_id: Uuid, locked: Locked) -> BuildSpec {
    BuildSpec {
        workspace_id,
        organization_id: locked.organization_id,
        build_number: locked.build_number + 1,
        template_version_id: locked.template_version_id,
        preset_id: Some(preset.id),
        transition: Transition::Delete,
        reason: BuildReason::Prebuild,
        initiator_id: PREBUILDS_USER_ID,
        for_prebuild: true,
        provisioner_state: locked.provisioner_state,
    }
}

/// A delete build for one prebuild, unless it was claimed, deleted or got a build in
/// flight since the snapshot.
async fn delete_prebuild(
    pool: &DbPool,
    fence: &Fence,
    now: DateTime<Utc>,
    preset: &Preset,
    workspace_id: Uuid,
) -> Result<Option<Uuid>, StoreError> {
    let mut conn = pool.get().await?;
    let job = conn
        .transaction(async |conn| {
            fence.check(conn).await?;
            let Some(locked) = lock_prebuild(conn, workspace_id).await? else {
                tracing::info!(%workspace_id, "prebuild delete skipped: claimed or gone");
                return Ok(None);
            };
            if !locked.job_status.is_finished() {
                tracing::info!(%workspace_id, status = %locked.job_status, "prebuild delete skipped: build in flight");
                return Ok(None);
            }
            let jobs = insert_builds(conn, now, vec![delete_spec(preset, workspace_id, locked)]).await?;
            let entry = audit(now, LOOP, "prebuild_delete", workspace_id, serde_json::json!({ "preset_id": preset.id }));
            insert_audit(conn, &[entry]).await?;
            Ok::<_, StoreError>(jobs.into_iter().next())
        })
        .await?;
    if job.is_some() {
        tracing::info!(preset_id = %preset.id, %workspace_id, "prebuild delete queued");
    }
    Ok(job)
}

/// Cancels the still-pending first builds of `preset` (an inactive version) and queues the
/// delete of each such workspace in the same transaction. A job a provisioner already took
/// is left alone: the `status = 'pending'` guard re-checks under the row lock.
async fn cancel_pending(
    pool: &DbPool,
    fence: &Fence,
    now: DateTime<Utc>,
    preset: &Preset,
) -> Result<Vec<Uuid>, StoreError> {
    let mut conn = pool.get().await?;
    let candidates: Vec<Uuid> = workspace_builds::table
        .inner_join(provisioner_jobs::table)
        .inner_join(workspaces::table)
        .filter(workspace_builds::preset_id.eq(preset.id))
        .filter(workspace_builds::build_number.eq(1))
        .filter(workspace_builds::transition.eq(Transition::Start))
        .filter(provisioner_jobs::status.eq(JobStatus::Pending))
        .filter(workspaces::owner_id.eq(PREBUILDS_USER_ID))
        .filter(workspaces::deleted.eq(false))
        .select(workspaces::id)
        .load(&mut conn)
        .await?;
    let mut jobs = Vec::new();
    for workspace_id in candidates {
        let job = conn
            .transaction(async |conn| {
            fence.check(conn).await?;
                let Some(locked) = lock_prebuild(conn, workspace_id).await? else { return Ok(None) };
                if locked.build_number != 1 || locked.build_transition != Transition::Start {
                    return Ok(None);
                }
                let canceled = diesel::update(provisioner_jobs::table)
                    .filter(provisioner_jobs::id.eq(locked.job_id))
                    .filter(provisioner_jobs::status.eq(JobStatus::Pending))
                    .set((
                        provisioner_jobs::status.eq(JobStatus::Canceled),
                        provisioner_jobs::completed_at.eq(now),
                        provisioner_jobs::canceled_at.eq(now),
                        provisioner_jobs::cancel_cause.eq("preset no longer active"),
                    ))
                    .execute(conn)
                    .await?;
                if canceled == 0 {
                    tracing::info!(%workspace_id, "pending prebuild not canceled: already acquired");
                    return Ok(None);
                }
                let jobs = insert_builds(conn, now, vec![delete_spec(preset, workspace_id, locked)]).await?;
                let entry = audit(now, LOOP, "prebuild_cancel", workspace_id, serde_json::json!({ "preset_id": preset.id }));
                insert_audit(conn, &[entry]).await?;
                Ok::<_, StoreError>(jobs.into_iter().next())
            })
            .await?;
        jobs.extend(job);
    }
    if !jobs.is_empty() {
        tracing::info!(preset_id = %preset.id, canceled = jobs.len(), "pending prebuilds canceled");
    }
    Ok(jobs)
}

/// Records the derived hard-limit status; never overwrites `validation_failed`, which
/// belongs to template validation. A change is audited, and reaching the hard limit
/// notifies the template admins, once per hard-limit episode, in the same transaction.
async fn set_status(
    pool: &DbPool,
    fence: &Fence,
    now: DateTime<Utc>,
    preset: &Preset,
    status: PresetStatus,
) -> Result<(), StoreError> {
    let stored = PrebuildStatus::from(status);
    let mut conn = pool.get().await?;
    let changed = conn
        .transaction(async |conn| {
            fence.check(conn).await?;
            let old: Option<PrebuildStatus> = presets::table
                .find(preset.id)
                .select(presets::prebuild_status)
                .for_update()
                .first(conn)
                .await
                .optional()?;
            let Some(old) =
                old.filter(|old| *old != stored && *old != PrebuildStatus::ValidationFailed)
            else {
                return Ok::<_, StoreError>(false);
            };
            diesel::update(presets::table.find(preset.id))
                .set(presets::prebuild_status.eq(stored))
                .execute(conn)
                .await?;
            let change = Change {
                action: "preset_status",
                resource_type: "preset",
                resource_id: Some(preset.id),
                diff: serde_json::json!({
                    "old": { "prebuild_status": old },
                    "new": { "prebuild_status": stored },
                }),
            };
            audit::record(conn, now, &Actor::system(LOOP), change).await?;
            if stored == PrebuildStatus::HardLimited {
                notify_hard_limited(conn, now, preset).await?;
            }
            Ok(true)
        })
        .await?;
    if changed {
        tracing::info!(preset_id = %preset.id, status = status.as_str(), "preset status changed");
    }
    Ok(())
}

async fn notify_hard_limited(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    preset: &Preset,
) -> Result<(), diesel::result::Error> {
    let payload = serde_json::json!({
        "preset_id": preset.id,
        "preset": preset.name,
        "template_id": preset.template_id,
        "template_version_id": preset.template_version_id,
    });
    for admin in template_admins(conn).await? {
        // The status only changes into hard_limited once per episode (under the preset's
        // row lock), so the moment it did names the episode.
        let dedupe = Dedupe::Episode(preset.id, now);
        enqueue(conn, now, admin, Kind::PresetHardLimited, dedupe, payload.clone()).await?;
    }
    Ok(())
}
