//! The dashboard's 24-hour chart of each pool (`pool_samples`): the prebuild leader records
//! desired and eligible per preset into five-minute buckets (once per bucket; a second write
//! to a bucket, after a change of leader, overwrites the figures that changed) and drops what
//! is older than a day in the same short fenced transaction. The table therefore stays
//! bounded: 288 rows per preset at most.

use chrono::{DateTime, Duration, DurationRound, Utc};
use diesel::sql_types::{Array, Integer, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

use super::leases::Fence;
use super::StoreError;
use crate::db::DbPool;

/// How long a sample is kept (the chart's span).
pub const SAMPLES_KEPT: Duration = Duration::hours(24);

/// The width of one bucket: a cycle every few seconds still writes one row per bucket.
pub const SAMPLE_BUCKET: Duration = Duration::minutes(5);

/// One preset's pool at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, diesel::QueryableByName)]
pub struct PoolSample {
    #[diesel(sql_type = SqlUuid)]
    pub preset_id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    pub sampled_at: DateTime<Utc>,
    #[diesel(sql_type = Integer)]
    pub desired: i32,
    #[diesel(sql_type = Integer)]
    pub eligible: i32,
}

/// The bucket `now` falls in (its start).
pub fn bucket_of(now: DateTime<Utc>) -> DateTime<Utc> {
    now.duration_trunc(SAMPLE_BUCKET).unwrap_or(now)
}

/// Presets that are gone by the time of the write (a template deleted meanwhile) are left
/// out rather than failing the foreign key. A row whose figures did not change since the
/// bucket's last cycle is left alone: a steady pool writes one row per bucket, not one per
/// cycle.
const RECORD_SQL: &str = "
INSERT INTO pool_samples AS old (sampled_at, preset_id, desired, eligible)
SELECT $1, s.preset_id, s.desired, s.eligible
FROM unnest($2::uuid[], $3::int[], $4::int[]) AS s (preset_id, desired, eligible)
WHERE EXISTS (SELECT 1 FROM presets p WHERE p.id = s.preset_id)
ON CONFLICT (sampled_at, preset_id)
DO UPDATE SET desired = EXCLUDED.desired, eligible = EXCLUDED.eligible
WHERE (old.desired, old.eligible) IS DISTINCT FROM (EXCLUDED.desired, EXCLUDED.eligible)";

/// Records `(preset, desired, eligible)` for the bucket of `now` and prunes samples older than
/// [`SAMPLES_KEPT`], as the leader of `fence` (a deposed leader writes nothing). Negative
/// figures are recorded as 0.
pub async fn record_pool_samples(
    pool: &DbPool,
    fence: &Fence,
    now: DateTime<Utc>,
    samples: &[(Uuid, i64, i64)],
) -> Result<(), StoreError> {
    let ids: Vec<Uuid> = samples.iter().map(|(id, _, _)| *id).collect();
    let clamp = |n: i64| i32::try_from(n.max(0)).unwrap_or(i32::MAX);
    let desired: Vec<i32> = samples.iter().map(|(_, d, _)| clamp(*d)).collect();
    let eligible: Vec<i32> = samples.iter().map(|(_, _, e)| clamp(*e)).collect();
    let bucket = bucket_of(now);
    let cutoff = now - SAMPLES_KEPT;
    let mut conn = pool.get().await?;
    conn.transaction::<_, StoreError, _>(async |conn| {
        fence.check(conn).await?;
        diesel::sql_query(RECORD_SQL)
            .bind::<Timestamptz, _>(bucket)
            .bind::<Array<SqlUuid>, _>(&ids)
            .bind::<Array<Integer>, _>(&desired)
            .bind::<Array<Integer>, _>(&eligible)
            .execute(conn)
            .await?;
        diesel::sql_query("DELETE FROM pool_samples WHERE sampled_at < $1")
            .bind::<Timestamptz, _>(cutoff)
            .execute(conn)
            .await?;
        Ok(())
    })
    .await
}

/// Every sample taken at or after `since`, by preset, oldest first.
pub async fn pool_samples_since(
    pool: &DbPool,
    since: DateTime<Utc>,
) -> Result<Vec<PoolSample>, StoreError> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(
        "SELECT preset_id, sampled_at, desired, eligible FROM pool_samples
         WHERE sampled_at >= $1 ORDER BY preset_id, sampled_at",
    )
    .bind::<Timestamptz, _>(since)
    .load(&mut conn)
    .await?)
}
