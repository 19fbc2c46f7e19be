//! Finding a live template, and a preset of its active version, by name.

use diesel::sql_types::{Array, BigInt, Nullable, Text, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::db::DbPool;
use crate::store::batcher::{by_ordinal, BatchWork, Batcher};
use crate::store::rows::Prepared;
use crate::store::StoreError;

/// Most names one lookup batch resolves.
const MOST_PER_BATCH: usize = 128;
/// Lookup batches at once, each on its own connection.
const BATCHES_AT_ONCE: usize = 2;

/// A template (and optionally a preset of its active version) named in an API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundTemplate {
    pub template_id: Uuid,
    /// `None` when no preset was asked for, or the active version has none of that name.
    pub preset_id: Option<Uuid>,
}

/// A template asked for by name: organization, template, and a preset of its active version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateName {
    pub organization: String,
    pub template: String,
    pub preset: Option<String>,
}

/// The live template `organization/name`, and the preset `preset` of its active version.
/// One statement: the preset is joined on, not read after the template.
pub async fn find_template(
    pool: &DbPool,
    organization: &str,
    name: &str,
    preset: Option<&str>,
) -> Result<Option<FoundTemplate>, StoreError> {
    let mut conn = pool.get().await?;
    let asked = TemplateName {
        organization: organization.to_owned(),
        template: name.to_owned(),
        preset: preset.map(str::to_owned),
    };
    let mut found = find_all(&mut conn, std::slice::from_ref(&asked)).await?;
    Ok(found.pop().flatten())
}

/// Where the API resolves the templates its requests name: names asked for together are
/// resolved together, in one statement, as [`find_template`] resolves one.
#[derive(Clone)]
pub struct TemplateFinder {
    batcher: Batcher<TemplateLookup>,
}

impl std::fmt::Debug for TemplateFinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateFinder").field("batches", &self.batcher.batches()).finish()
    }
}

struct TemplateLookup {
    pool: DbPool,
}

impl TemplateFinder {
    pub fn new(pool: DbPool) -> Self {
        Self { batcher: Batcher::new(TemplateLookup { pool }, MOST_PER_BATCH, BATCHES_AT_ONCE) }
    }

    /// [`find_template`], in a batch with the other lookups of the moment. A batch that
    /// failed leaves each of its lookups to run alone, which reports its own error.
    pub async fn find(&self, asked: TemplateName) -> Result<Option<FoundTemplate>, StoreError> {
        match self.batcher.submit(asked.clone()).await {
            Some(found) => Ok(found),
            None => {
                let pool = &self.batcher.work().pool;
                find_template(pool, &asked.organization, &asked.template, asked.preset.as_deref())
                    .await
            }
        }
    }

    /// Batches run so far (each of one or more lookups).
    pub fn batches(&self) -> u64 {
        self.batcher.batches()
    }
}

impl BatchWork for TemplateLookup {
    type Request = TemplateName;
    type Reply = Option<FoundTemplate>;

    async fn serve(&self, batch: Vec<TemplateName>) -> Vec<Option<FoundTemplate>> {
        let found = match self.pool.get().await {
            Ok(mut conn) => find_all(&mut conn, &batch).await,
            Err(err) => Err(err.into()),
        };
        found.unwrap_or_else(|error| {
            tracing::warn!(%error, lookups = batch.len(), "a template lookup batch failed; its lookups run alone");
            Vec::new()
        })
    }
}

#[derive(QueryableByName)]
struct FoundRow {
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = SqlUuid)]
    template_id: Uuid,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    preset_id: Option<Uuid>,
}

/// What each name resolves to, in order, in one statement.
async fn find_all(
    conn: &mut AsyncPgConnection,
    asked: &[TemplateName],
) -> Result<Vec<Option<FoundTemplate>>, StoreError> {
    let organizations: Vec<&str> = asked.iter().map(|a| a.organization.as_str()).collect();
    let templates: Vec<&str> = asked.iter().map(|a| a.template.as_str()).collect();
    let presets: Vec<Option<&str>> = asked.iter().map(|a| a.preset.as_deref()).collect();
    let rows: Vec<FoundRow> = Prepared::new(
        diesel::sql_query(FIND_SQL)
            .bind::<Array<Text>, _>(organizations)
            .bind::<Array<Text>, _>(templates)
            .bind::<Array<Nullable<Text>>, _>(presets),
    )
    .load(conn)
    .await?;
    let found = rows.into_iter().map(|row| {
        (row.n, FoundTemplate { template_id: row.template_id, preset_id: row.preset_id })
    });
    Ok(by_ordinal(asked.len(), found))
}

// With no preset asked for, the join's `name = NULL` matches none.
const FIND_SQL: &str = "
SELECT DISTINCT ON (a.n) a.n, t.id AS template_id, p.id AS preset_id
  FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS a(organization, name, preset, n)
  JOIN organizations o ON o.name = a.organization
  JOIN templates t ON t.organization_id = o.id AND t.name = a.name AND NOT t.deleted
  LEFT JOIN presets p ON p.template_version_id = t.active_version_id AND p.name = a.preset
 ORDER BY a.n";
