//! Creating prebuilds in batches across presets: workspaces, their first start builds and
//! pending jobs, and one audit entry per workspace, each kind in multi-row inserts (within
//! PostgreSQL's parameter limit), a few thousand workspaces per transaction. Every
//! transaction checks the leader's fence first.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use futures_util::stream::{self, StreamExt};
use poolkeeper_core::prebuilds::Preset;
use tracing::Instrument;
use uuid::Uuid;

use crate::db::enums::{AutomaticUpdates, BuildReason, Transition};
use crate::db::models::NewWorkspace;
use crate::db::schema::{templates, workspaces};
use crate::db::{DbPool, PREBUILDS_USER_ID};
use crate::store::leases::Fence;
use crate::store::rows::{audit, insert_audit, insert_builds, BuildSpec, ROWS_PER_INSERT};
use crate::store::StoreError;

/// The audit actor of the prebuild loop.
const LOOP: &str = "prebuilds";

/// Workspaces per transaction: large enough that a cold start of 90,000 prebuilds is a few
/// dozen transactions, small enough that one holds its locks for well under a second.
pub const CREATES_PER_TRANSACTION: usize = 2_000;

/// One preset's creates.
#[derive(Debug, Clone)]
pub struct Creates {
    pub preset: Preset,
    pub count: u32,
}

/// What became of one transaction's creates.
#[derive(Debug)]
pub struct CreateBatch {
    /// The presets whose creates it carried.
    pub presets: Vec<Uuid>,
    /// The new jobs of each preset (committed), or why none were made.
    pub jobs: Result<HashMap<Uuid, Vec<Uuid>>, StoreError>,
}

/// Creates every preset's prebuilds, whole presets packed into transactions of about
/// [`CREATES_PER_TRANSACTION`] workspaces, up to `parallelism` transactions at once. A
/// failed transaction fails the presets in it only.
pub async fn create_prebuilds(
    pool: &DbPool,
    fence: &Fence,
    now: DateTime<Utc>,
    creates: Vec<Creates>,
    parallelism: usize,
) -> Vec<CreateBatch> {
    let batches = pack(creates.into_iter().filter(|c| c.count > 0).collect());
    stream::iter(batches)
        .map(|batch| async move {
            let presets = batch.iter().map(|c| c.preset.id).collect();
            let span = tracing::info_span!("create_prebuilds", presets = batch.len());
            let jobs = create_batch(pool, fence, now, &batch).instrument(span).await;
            CreateBatch { presets, jobs }
        })
        .buffer_unordered(parallelism.max(1))
        .collect()
        .await
}

/// Whole presets into batches of about [`CREATES_PER_TRANSACTION`] workspaces.
fn pack(creates: Vec<Creates>) -> Vec<Vec<Creates>> {
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    let mut rows = 0;
    for create in creates {
        rows += create.count as usize;
        batch.push(create);
        if rows >= CREATES_PER_TRANSACTION {
            batches.push(std::mem::take(&mut batch));
            rows = 0;
        }
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

/// One transaction: the batch's workspaces, builds, jobs and audit entries. Returns the new
/// jobs of each preset.
async fn create_batch(
    pool: &DbPool,
    fence: &Fence,
    now: DateTime<Utc>,
    batch: &[Creates],
) -> Result<HashMap<Uuid, Vec<Uuid>>, StoreError> {
    let mut conn = pool.get().await?;
    let jobs = conn
        .transaction(async |conn| {
            fence.check(conn).await?;
            let mut template_ids: Vec<Uuid> = batch.iter().map(|c| c.preset.template_id).collect();
            template_ids.sort_unstable();
            template_ids.dedup();
            let organizations: HashMap<Uuid, Uuid> = templates::table
                .filter(templates::id.eq_any(&template_ids))
                .select((templates::id, templates::organization_id))
                .load::<(Uuid, Uuid)>(conn)
                .await?
                .into_iter()
                .collect();
            let mut new = Vec::new();
            let mut specs = Vec::new();
            let mut entries = Vec::new();
            let mut owners = Vec::new();
            for create in batch {
                let preset = &create.preset;
                // A template deleted since the snapshot: nothing to create for it.
                let Some(&organization_id) = organizations.get(&preset.template_id) else {
                    continue;
                };
                for _ in 0..create.count {
                    let id = Uuid::new_v4();
                    new.push(NewWorkspace {
                        id,
                        organization_id,
                        owner_id: PREBUILDS_USER_ID,
                        template_id: preset.template_id,
                        name: format!("prebuild-{}", id.simple()),
                        autostart_schedule: None,
                        ttl_secs: 0,
                        next_start_at: None,
                        automatic_updates: AutomaticUpdates::Never,
                        last_used_at: Some(now),
                        created_at: Some(now),
                    });
                    specs.push(BuildSpec {
                        workspace_id: id,
                        organization_id,
                        build_number: 1,
                        template_version_id: preset.template_version_id,
                        preset_id: Some(preset.id),
                        transition: Transition::Start,
                        reason: BuildReason::Prebuild,
                        initiator_id: PREBUILDS_USER_ID,
                        for_prebuild: true,
                        provisioner_state: None,
                    });
                    entries.push(audit(
                        now,
                        LOOP,
                        "prebuild_create",
                        id,
                        serde_json::json!({ "preset_id": preset.id }),
                    ));
                    owners.push(preset.id);
                }
            }
            for chunk in new.chunks(ROWS_PER_INSERT) {
                diesel::insert_into(workspaces::table).values(chunk).execute(conn).await?;
            }
            let jobs = insert_builds(conn, now, specs).await?;
            insert_audit(conn, &entries).await?;
            let mut by_preset: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
            for (preset_id, job) in owners.into_iter().zip(jobs) {
                by_preset.entry(preset_id).or_default().push(job);
            }
            Ok::<_, StoreError>(by_preset)
        })
        .await?;
    for create in batch {
        let created = jobs.get(&create.preset.id).map_or(0, Vec::len);
        tracing::info!(preset_id = %create.preset.id, created, "prebuilds created");
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creates(counts: &[u32]) -> Vec<Creates> {
        let preset: Preset = serde_json::from_value(serde_json::json!({
            "id": Uuid::nil(), "name": "p", "template_id": Uuid::nil(),
            "template_version_id": Uuid::nil(), "using_active_version": true,
            "template_deleted": false, "desired_instances": 1, "expiration_ttl_secs": 0,
            "scheduling_timezone": "", "schedules": [], "schedule_lead_secs": 0,
            "invalidated_at": null, "status": "healthy"
        }))
        .expect("preset");
        counts.iter().map(|&count| Creates { preset: preset.clone(), count }).collect()
    }

    #[test]
    fn whole_presets_are_packed_up_to_the_batch_size() {
        let sizes = |counts: &[u32]| -> Vec<usize> {
            pack(creates(counts)).iter().map(|b| b.iter().map(|c| c.count as usize).sum()).collect()
        };
        assert_eq!(sizes(&[]), Vec::<usize>::new());
        assert_eq!(sizes(&[9, 9]), vec![18]);
        // A preset larger than a batch is one batch of its own, never split.
        assert_eq!(sizes(&[5_000, 1]), vec![5_000, 1]);
        let many = vec![9; 1_000];
        let batches = sizes(&many);
        assert_eq!(batches.iter().sum::<usize>(), 9_000);
        assert!(batches.iter().all(|n| *n <= CREATES_PER_TRANSACTION + 8), "{batches:?}");
    }
}
