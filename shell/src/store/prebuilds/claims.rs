//! The claims of autoscaled presets (rules §4 "Autoscale"), read in the snapshot's
//! transaction. A claim is the first build a person starts on a workspace of a preset: the
//! hand-over build of a claimed prebuild (its previous build was the system user's), or the
//! first build of a fresh workspace made because no prebuild was ready. Both are demand.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use poolkeeper_core::prebuilds::Claim;
use uuid::Uuid;

use crate::db::PREBUILDS_USER_ID;

/// Served by `workspace_builds_preset_id_created_at_idx` (preset, newest first); the previous
/// build is found through the unique (workspace, build number) index.
/// Binds: $1 preset ids, $2 the oldest instant of interest (exclusive), $3 the system user.
const CLAIMS_SQL: &str = "
SELECT b.workspace_id, b.preset_id, b.created_at AS at
FROM workspace_builds b
WHERE b.preset_id = ANY($1) AND b.created_at > $2
  AND b.transition = 'start' AND b.initiator_id <> $3
  AND (b.build_number = 1
       OR EXISTS (SELECT 1 FROM workspace_builds prev
                  WHERE prev.workspace_id = b.workspace_id
                    AND prev.build_number = b.build_number - 1
                    AND prev.initiator_id = $3))";

#[derive(diesel::QueryableByName)]
struct ClaimRow {
    #[diesel(sql_type = SqlUuid)]
    workspace_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    preset_id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    at: DateTime<Utc>,
}

/// The claims of `presets` made after `since`; no statement at all when `presets` is empty.
pub(super) async fn load_claims(
    conn: &mut AsyncPgConnection,
    presets: Vec<Uuid>,
    since: DateTime<Utc>,
) -> Result<Vec<Claim>, diesel::result::Error> {
    if presets.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<ClaimRow> = diesel::sql_query(CLAIMS_SQL)
        .bind::<Array<SqlUuid>, _>(presets)
        .bind::<Timestamptz, _>(since)
        .bind::<SqlUuid, _>(PREBUILDS_USER_ID)
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| Claim { workspace_id: row.workspace_id, preset_id: row.preset_id, at: row.at })
        .collect())
}
