//! The migrations, tested both ways (Lemmy's migration check): apply, revert all, re-apply,
//! and the catalog must come out the same; the rows the migrations seed; and that the
//! hand-written diesel schema and enums agree with the migrated database.

use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use poolkeeper::db::enums::{
    AgentLifecycle, AttemptOutcome, AutomaticUpdates, DeliveryMethod, DeliveryStatus, JobStatus,
    PrebuildStatus, ProvisionerKind, Transition, UserRole, UserStatus,
};
use poolkeeper::db::models::{Organization, Setting, User};
use poolkeeper::db::schema;
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::db::{migrate, DEFAULT_ORGANIZATION_ID, PREBUILDS_USER_ID};

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = Text)]
    line: String,
}

/// Everything in schema `public` that a migration can create, one sorted line per object.
const CATALOG_DUMP: &str = r#"
SELECT line FROM (
    SELECT format('column %s.%s %s nullable=%s default=%s generated=%s', table_name,
                  column_name, udt_name, is_nullable, column_default, generation_expression)
    FROM information_schema.columns WHERE table_schema = 'public'
  UNION ALL
    SELECT format('constraint %s %s %s %s', conrelid::regclass, conname,
                  pg_get_constraintdef(oid), condeferred)
    FROM pg_constraint WHERE connamespace = 'public'::regnamespace
  UNION ALL
    SELECT format('index %s', indexdef) FROM pg_indexes WHERE schemaname = 'public'
  UNION ALL
    SELECT format('trigger %s', pg_get_triggerdef(t.oid))
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    WHERE NOT t.tgisinternal AND c.relnamespace = 'public'::regnamespace
  UNION ALL
    SELECT format('function %s', pg_get_functiondef(oid))
    FROM pg_proc WHERE pronamespace = 'public'::regnamespace
  UNION ALL
    SELECT format('relation %s %s', relname, relkind)
    FROM pg_class WHERE relnamespace = 'public'::regnamespace
  UNION ALL
    SELECT format('type %s %s', typname, typtype)
    FROM pg_type
    WHERE typnamespace = 'public'::regnamespace AND typtype IN ('e', 'd', 'r', 'm')
) AS dump(line)
ORDER BY line
"#;

async fn catalog(conn: &mut AsyncPgConnection) -> Vec<String> {
    let lines: Vec<Line> = diesel::sql_query(CATALOG_DUMP).load(conn).await.expect("dump");
    lines.into_iter().map(|l| l.line).collect()
}

async fn run_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

#[tokio::test]
async fn migrations_revert_cleanly_and_reapply_to_the_same_schema() {
    let db = TestDatabase::empty().await;
    let url = db.url().to_owned();
    let known = migrate::known_versions().expect("embedded migrations");
    assert!(known.len() >= 4, "{known:?}");

    let applied = run_blocking({
        let url = url.clone();
        move || migrate::run_pending(&url)
    })
    .await
    .expect("apply");
    assert_eq!(applied, known);
    let mut conn = AsyncPgConnection::establish(&url).await.expect("connect");
    let first = catalog(&mut conn).await;
    assert!(first.iter().any(|l| l.starts_with("relation workspace_builds r")));

    let again = run_blocking({
        let url = url.clone();
        move || migrate::run_pending(&url)
    })
    .await
    .expect("apply again");
    assert!(again.is_empty(), "nothing pending: {again:?}");

    let mut reverted = run_blocking({
        let url = url.clone();
        move || migrate::revert_all(&url)
    })
    .await
    .expect("revert all");
    reverted.reverse();
    assert_eq!(reverted, known, "reverted newest first");
    // Only diesel's bookkeeping table may remain: every down.sql drops what its up.sql made.
    let left: Vec<String> = catalog(&mut conn)
        .await
        .into_iter()
        .filter(|l| !l.contains("__diesel_schema_migrations"))
        .collect();
    assert!(left.is_empty(), "left behind by down.sql: {left:#?}");

    run_blocking({
        let url = url.clone();
        move || migrate::run_pending(&url)
    })
    .await
    .expect("re-apply");
    let second = catalog(&mut conn).await;
    assert_eq!(first, second, "the schema after re-applying differs");
}

#[tokio::test]
async fn migrations_seed_the_default_organization_prebuilds_user_and_settings() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;

    let org: Organization = schema::organizations::table
        .find(DEFAULT_ORGANIZATION_ID)
        .select(Organization::as_select())
        .get_result(&mut conn)
        .await
        .expect("default organization");
    assert_eq!(org.name, poolkeeper::db::DEFAULT_ORGANIZATION_NAME);

    let prebuilds: User = schema::users::table
        .find(PREBUILDS_USER_ID)
        .select(User::as_select())
        .get_result(&mut conn)
        .await
        .expect("prebuilds user");
    assert_eq!(prebuilds.username, poolkeeper::db::PREBUILDS_USERNAME);
    assert!(prebuilds.is_system);
    assert_eq!(prebuilds.status, UserStatus::Active);

    let paused: Setting = schema::settings::table
        .find(poolkeeper::db::RECONCILIATION_PAUSED_KEY)
        .select(Setting::as_select())
        .get_result(&mut conn)
        .await
        .expect("reconciliation_paused setting");
    assert_eq!(paused.value, serde_json::Value::Bool(false));
}

/// Column names of a `SELECT t.a, t.b FROM t` as diesel renders it.
fn rendered_columns(sql: &str) -> Vec<String> {
    let select = sql.split(" FROM ").next().unwrap_or_default();
    let list = select.trim_start_matches("SELECT ");
    list.split(", ")
        .map(|col| col.rsplit('.').next().unwrap_or(col).trim_matches('"').to_owned())
        .collect()
}

macro_rules! diesel_tables {
    ($($table:ident),+ $(,)?) => {
        vec![$((
            stringify!($table).to_owned(),
            rendered_columns(
                &diesel::debug_query::<diesel::pg::Pg, _>(
                    &schema::$table::table.select(schema::$table::all_columns),
                )
                .to_string(),
            ),
        )),+]
    };
}

#[derive(QueryableByName)]
struct TableColumn {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
}

#[tokio::test]
async fn diesel_schema_matches_the_migrated_database() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let rows: Vec<TableColumn> = diesel::sql_query(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations' \
         ORDER BY table_name, ordinal_position",
    )
    .load(&mut conn)
    .await
    .expect("columns");
    let mut in_database: Vec<(String, Vec<String>)> = Vec::new();
    for row in rows {
        match in_database.last_mut() {
            Some((table, columns)) if *table == row.table_name => columns.push(row.column_name),
            _ => in_database.push((row.table_name, vec![row.column_name])),
        }
    }

    let mut in_schema_rs = diesel_tables!(
        organizations,
        users,
        api_tokens,
        templates,
        template_versions,
        presets,
        preset_parameters,
        preset_schedules,
        provisioner_jobs,
        workspaces,
        workspace_builds,
        workspace_agents,
        notifications,
        notification_attempts,
        notification_preferences,
        audit_log,
        settings,
        leader_leases,
        pool_samples,
        dashboard_sessions,
        prebuild_changes,
    );
    in_schema_rs.sort();
    assert_eq!(in_schema_rs, in_database);
}

/// The values named by a `CHECK (col = ANY (ARRAY['a'::text, ...]))` constraint.
async fn check_values(conn: &mut AsyncPgConnection, constraint: &str) -> Vec<String> {
    let defs: Vec<Line> = diesel::sql_query(format!(
        "SELECT pg_get_constraintdef(oid) AS line FROM pg_constraint WHERE conname = '{constraint}'"
    ))
    .load(conn)
    .await
    .expect("constraint definition");
    let [def] = defs.as_slice() else { panic!("constraint {constraint} not found exactly once") };
    def.line.split('\'').skip(1).step_by(2).map(str::to_owned).collect()
}

fn names<T: std::fmt::Display>(all: &[T]) -> Vec<String> {
    all.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn rust_enums_match_the_check_constraints() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let cases = [
        ("users_status_check", names(UserStatus::ALL)),
        ("users_role_check", names(UserRole::ALL)),
        ("template_versions_provisioner_check", names(ProvisionerKind::ALL)),
        ("presets_prebuild_status_check", names(PrebuildStatus::ALL)),
        ("workspaces_automatic_updates_check", names(AutomaticUpdates::ALL)),
        ("workspace_builds_transition_check", names(Transition::ALL)),
        ("provisioner_jobs_transition_check", names(Transition::ALL)),
        ("provisioner_jobs_status_check", names(JobStatus::ALL)),
        ("workspace_agents_lifecycle_state_check", names(AgentLifecycle::ALL)),
        ("notifications_status_check", names(DeliveryStatus::ALL)),
        ("notification_attempts_method_check", names(DeliveryMethod::ALL)),
        ("notification_attempts_outcome_check", names(AttemptOutcome::ALL)),
    ];
    for (constraint, expected) in cases {
        assert_eq!(check_values(&mut conn, constraint).await, expected, "{constraint}");
    }
}

/// Migrations after the first release run against live databases that every write path
/// inserts into: an index they add must be built `CONCURRENTLY` (outside a transaction, as
/// the migration's metadata says), or it blocks all writes to the table while it builds.
#[test]
fn later_migrations_build_indexes_concurrently() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut later: Vec<_> = std::fs::read_dir(&dir)
        .expect("migrations folder")
        .map(|entry| entry.expect("migration entry").path())
        .filter(|path| !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("2025-")))
        .collect();
    later.sort();
    let mut checked = 0;
    for migration in later {
        let up = std::fs::read_to_string(migration.join("up.sql")).expect("up.sql");
        let statements: Vec<String> = up
            .lines()
            .filter(|line| !line.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
            .split(';')
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ").to_uppercase())
            .filter(|s| !s.is_empty())
            .collect();
        let builds_index = statements
            .iter()
            .any(|s| s.starts_with("CREATE INDEX") || s.starts_with("CREATE UNIQUE INDEX"));
        if !builds_index {
            continue;
        }
        checked += 1;
        let name = migration.display();
        for statement in &statements {
            assert!(statement.contains("CONCURRENTLY"), "{name}: {statement}");
        }
        // CONCURRENTLY refuses any transaction, even the implicit one of a multi-statement
        // string: one statement per migration, and no transaction around it.
        assert_eq!(statements.len(), 1, "{name}: one statement per concurrent index");
        let metadata = std::fs::read_to_string(migration.join("metadata.toml")).unwrap_or_default();
        assert!(metadata.contains("run_in_transaction = false"), "{name}: metadata.toml");
    }
    assert!(checked > 0, "no later migration builds an index");
}
