//! Templates files: validation names the field before anything is written; applying is
//! idempotent; a changed file becomes a new active version.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use poolkeeper::db::schema::{preset_schedules, presets, template_versions, templates};
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::store::templates::apply;
use poolkeeper::templates_file::{parse_json, parse_toml};

const EXAMPLE: &str = include_str!("../../examples/templates.toml");

/// `check(file, field)`: parsing fails and the error names `field`.
fn check_invalid(file: &str, field: &str) {
    match parse_toml(file) {
        Ok(_) => panic!("accepted, expected an error at {field}:\n{file}"),
        Err(err) => assert_eq!(err.field, field, "{err}"),
    }
}

#[test]
fn the_example_is_valid() {
    let spec = parse_toml(EXAMPLE).expect("valid example");
    assert_eq!(spec.name, "python-dev");
    assert_eq!(spec.presets.len(), 2);
    assert_eq!(spec.presets[0].schedules.len(), 1);
}

#[test]
fn simulated_sources_declare_agents_and_resources() {
    let file = r#"
[template]
name = "t"
[version]
name = "v1"
provisioner = "simulated"
[version.source]
agent_start_secs = 1.5
agents = ["main", "sidecar"]
resources = ["home", "vm"]
replace_on_claim = ["vm"]
"#;
    let spec = parse_toml(file).expect("valid");
    assert_eq!(spec.version.source["replace_on_claim"], serde_json::json!(["vm"]));
    assert_eq!(spec.version.source["agents"], serde_json::json!(["main", "sidecar"]));
}

#[test]
fn errors_name_the_field() {
    let base = r#"
[template]
name = "t"
[version]
name = "v1"
provisioner = "simulated"
"#;
    check_invalid(&format!("{base}[[presets]]\nname = \"a\"\ntimezone = \"UTC\"\n[[presets.schedules]]\ncron = \"0 9 * * *\"\ninstances = 1\n"), "presets[0].schedules[0].cron");
    check_invalid(&format!("{base}[[presets]]\nname = \"a\"\n[[presets]]\nname = \"b\"\ntimezone = \"UTC\"\n[[presets.schedules]]\ncron = \"* 9-12 * * *\"\ninstances = 1\n[[presets.schedules]]\ncron = \"* 12-13 * * *\"\ninstances = 2\n"), "presets[1].schedules[1].cron");
    check_invalid(&format!("{base}[[presets]]\nname = \"a\"\ntimezone = \"Mars/Olympus\"\n[[presets.schedules]]\ncron = \"* 9 * * *\"\ninstances = 1\n"), "presets[0].timezone");
    check_invalid(&format!("{base}[[presets]]\nname = \"a\"\ntimezone = \"UTC\"\n[[presets.schedules]]\ncron = \"* 9 * * nope\"\ninstances = 1\n"), "presets[0].schedules[0].cron");
    check_invalid(
        &format!("{base}[[presets]]\nname = \"a\"\ninstances = -1\n"),
        "presets[0].instances",
    );
    check_invalid(&format!("{base}[[presets]]\nname = \"a\"\ntimezone = \"UTC\"\n[[presets.schedules]]\ncron = \"* 9 * * *\"\ninstances = -3\n"), "presets[0].schedules[0].instances");
    check_invalid(
        &format!("{base}[[presets]]\nname = \"a\"\n[[presets]]\nname = \"a\"\n"),
        "presets[1].name",
    );
    check_invalid(
        &format!("{base}[[presets]]\nname = \"a\"\ninstances = \"two\"\n"),
        "presets[0].instances",
    );
    check_invalid(&format!("{base}[[presets]]\nname = \"a\"\nbogus = 1\n"), "presets[0].bogus");
    check_invalid(&base.replace("simulated", "docker"), "version.provisioner");
    check_invalid(
        &format!("{base}[version.source]\nfailure_rate = 2.0\n"),
        "version.source.failure_rate",
    );
    check_invalid(
        &format!("{base}[version.source]\nagents = [\"main\", \"\"]\n"),
        "version.source.agents[1]",
    );
    check_invalid(
        &format!("{base}[version.source]\nresources = [\"vm\", \"vm\"]\n"),
        "version.source.resources[1]",
    );
    check_invalid(
        &format!("{base}[version.source]\nresources = [\"home\"]\nreplace_on_claim = [\"vm\"]\n"),
        "version.source.replace_on_claim",
    );
    check_invalid(
        &base.replace("name = \"t\"", "name = \"t\"\ndefault_ttl_secs = -5"),
        "template.default_ttl_secs",
    );
    check_invalid(
        &base.replace("name = \"t\"", "name = \"t\"\nautostart_days = [\"mon\", \"funday\"]"),
        "template.autostart_days[1]",
    );
}

#[test]
fn json_is_accepted_too() {
    let spec = parse_json(
        r#"{"template": {"name": "t"}, "version": {"name": "v", "provisioner": "terraform",
            "source": {"dir": "modules/dev"}}, "presets": [{"name": "p", "instances": 1}]}"#,
    )
    .expect("valid");
    assert_eq!(spec.presets[0].desired_instances, Some(1));
    let err = parse_json(
        r#"{"template": {"name": "t"}, "version": {"name": "v", "provisioner": "terraform"}}"#,
    )
    .expect_err("terraform needs a dir");
    assert_eq!(err.field, "version.source.dir");
    let err = parse_json(r#"{"template": {"name": "t"}, "version": {"provisioner": "simulated"}}"#)
        .expect_err("a version needs a name");
    assert_eq!(err.field, "version.name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_is_idempotent_and_a_change_makes_a_new_active_version() {
    let db = TestDatabase::new().await;
    let spec = parse_toml(EXAMPLE).expect("valid example");
    let first = apply(db.pool(), &spec, chrono::Utc::now()).await.expect("first apply");
    assert!(first.template_created && first.version_created);
    let second = apply(db.pool(), &spec, chrono::Utc::now()).await.expect("second apply");
    assert!(second.is_noop(), "{second:?}");
    assert_eq!(second.active_version_id, first.active_version_id);

    let mut conn = db.conn().await;
    let count_versions = template_versions::table.count().get_result::<i64>(&mut conn).await;
    assert_eq!(count_versions.expect("count"), 1);
    let schedules = preset_schedules::table.count().get_result::<i64>(&mut conn).await;
    assert_eq!(schedules.expect("count"), 1);

    // Changing a preset without renaming the version is refused, naming the field.
    let changed = EXAMPLE.replace("instances = 2", "instances = 3");
    let spec2 = parse_toml(&changed).expect("valid");
    let err = apply(db.pool(), &spec2, chrono::Utc::now()).await.expect_err("same version name");
    assert!(err.to_string().starts_with("version.name:"), "{err}");

    let spec3 = parse_toml(&changed.replace("name = \"v1\"", "name = \"v2\"")).expect("valid");
    let third = apply(db.pool(), &spec3, chrono::Utc::now()).await.expect("third apply");
    assert!(third.version_created && !third.template_created);
    assert_ne!(third.active_version_id, first.active_version_id);
    let active: Option<uuid::Uuid> = templates::table
        .select(templates::active_version_id)
        .first(&mut conn)
        .await
        .expect("template");
    assert_eq!(active, Some(third.active_version_id));
    let desired: Vec<Option<i32>> = presets::table
        .filter(presets::template_version_id.eq(third.active_version_id))
        .filter(presets::name.eq("small"))
        .select(presets::desired_instances)
        .load(&mut conn)
        .await
        .expect("presets");
    assert_eq!(desired, [Some(3)]);
    // Only template options changed: the template is updated, no new version.
    let spec4 = parse_toml(
        &changed
            .replace("name = \"v1\"", "name = \"v2\"")
            .replace("failure_ttl_secs = 3600", "failure_ttl_secs = 60"),
    )
    .expect("valid");
    let fourth = apply(db.pool(), &spec4, chrono::Utc::now()).await.expect("fourth apply");
    assert!(fourth.template_updated && !fourth.version_created, "{fourth:?}");
    // Re-applying the first file rolls back to v1 without a new version.
    let back = apply(db.pool(), &spec, chrono::Utc::now()).await.expect("roll back");
    assert_eq!(back.active_version_id, first.active_version_id);
    assert!(back.template_updated && !back.version_created, "{back:?}");
}

/// rules §4 "Autoscale" in a templates file: a preset may size its pool by demand alone (no
/// `instances`); every bad setting is refused at its field.
#[test]
fn autoscale_is_validated_field_by_field() {
    let base = r#"
[template]
name = "t"
[version]
name = "v1"
provisioner = "simulated"
[[presets]]
name = "a"
"#;
    let spec = parse_toml(&format!(
        "{base}[presets.autoscale]\nmin = 1\nmax = 6\nwindow_secs = 600\nheadroom = 1.5\n"
    ))
    .expect("valid");
    let autoscale = spec.presets[0].autoscale.expect("autoscale");
    assert_eq!((autoscale.min, autoscale.max, autoscale.window_secs), (1, 6, 600));
    assert_eq!(spec.presets[0].desired_instances, Some(0), "a pool without a fixed count");
    let bad = |body: &str, field: &str| {
        check_invalid(&format!("{base}[presets.autoscale]\n{body}\n"), field);
    };
    bad("min = 3\nmax = 2\nwindow_secs = 600", "presets[0].autoscale.max");
    bad("min = -1\nmax = 2\nwindow_secs = 600", "presets[0].autoscale.min");
    bad("min = 1\nmax = 2\nwindow_secs = 0", "presets[0].autoscale.window_secs");
    bad("min = 1\nmax = 2\nwindow_secs = 60\nheadroom = -0.5", "presets[0].autoscale.headroom");
    bad("min = 1\nmax = 2\nwindow_secs = 60\nheadroom = inf", "presets[0].autoscale.headroom");
    bad("min = 1\nmax = 2", "presets[0].autoscale.window_secs");
    bad("min = 1\nmax = 2\nwindow_secs = 60\nspeed = 3", "presets[0].autoscale.speed");
}

/// An autoscaled preset is stored and loaded into the snapshot as the file says, and a
/// change of its settings is a change of the version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscale_is_stored_and_loaded() {
    use poolkeeper_core::prebuilds::Autoscale;
    let db = TestDatabase::new().await;
    let example = parse_toml(EXAMPLE).expect("valid example");
    let file = EXAMPLE.replace(
        "autoscale = { min = 1, max = 6, window_secs = 300, headroom = 3.0 }",
        "autoscale = { min = 1, max = 8, window_secs = 900, headroom = 2.0 }",
    );
    let spec = parse_toml(&file).expect("valid");
    assert_ne!(spec.content_hash(), example.content_hash());
    let plain = parse_toml(
        &file.replace("autoscale = { min = 1, max = 8, window_secs = 900, headroom = 2.0 }", ""),
    )
    .expect("valid without autoscale");
    assert!(plain.presets.iter().all(|p| p.autoscale.is_none()));
    apply(db.pool(), &spec, chrono::Utc::now()).await.expect("apply");
    let mut conn = db.conn().await;
    let now = chrono::Utc::now();
    let loaded = poolkeeper::store::prebuilds::load_prebuild_snapshot(
        &mut conn,
        now,
        poolkeeper_core::prebuilds::ReconcilerConfig {
            backoff_interval_secs: 60,
            backoff_lookback_secs: 3600,
            failure_hard_limit: 3,
            max_pending_creates_per_preset: 0,
            failed_keep: 3,
            failed_grace_secs: 3600,
        },
    )
    .await
    .expect("load");
    let small = loaded.snapshot.presets.iter().find(|p| p.name == "small").expect("small");
    assert_eq!(
        small.autoscale,
        Some(Autoscale { min: 1, max: 8, window_secs: 900, headroom: 2.0 })
    );
    let others = loaded.snapshot.presets.iter().filter(|p| p.name != "small");
    assert!(others.into_iter().all(|p| p.autoscale.is_none()));
}

/// rules §6 in a templates file: a version's tags and its prebuilds' tags are checked key by
/// key, stored on the version, and left out of the content hash when absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_tags_are_validated_and_stored() {
    let base = r#"
[template]
name = "t"
[version]
name = "v1"
provisioner = "simulated"
"#;
    check_invalid(&format!("{base}tags = {{ \"re gion\" = \"eu\" }}\n"), "version.tags.re gion");
    check_invalid(
        &format!("{base}prebuild_tags = {{ pool = \"\" }}\n"),
        "version.prebuild_tags.pool",
    );
    let plain = parse_toml(base).expect("valid");
    let tagged = parse_toml(&format!(
        "{base}tags = {{ pool = \"people\", region = \"eu\" }}\nprebuild_tags = {{ pool = \"prebuilds\" }}\n"
    ))
    .expect("valid");
    assert_ne!(plain.content_hash(), tagged.content_hash());
    assert!(plain.version.tags.is_empty() && plain.version.prebuild_tags.is_empty());
    let db = TestDatabase::new().await;
    apply(db.pool(), &tagged, chrono::Utc::now()).await.expect("apply");
    let mut conn = db.conn().await;
    let (tags, prebuild_tags): (serde_json::Value, serde_json::Value) = template_versions::table
        .select((template_versions::provisioner_tags, template_versions::prebuild_tags))
        .first(&mut conn)
        .await
        .expect("version");
    assert_eq!(tags, serde_json::json!({ "pool": "people", "region": "eu" }));
    assert_eq!(prebuild_tags, serde_json::json!({ "pool": "prebuilds" }));
}
