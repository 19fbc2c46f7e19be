//! Templates named by API requests, resolved against a real PostgreSQL: one at a time, and
//! many at once by the API's `TemplateFinder`.

use diesel_async::SimpleAsyncConnection;
use futures_util::future::join_all;
use poolkeeper::db::test_db::TestDatabase;
use poolkeeper::store::templates::{find_template, FoundTemplate, TemplateFinder, TemplateName};
use poolkeeper_tests::seed;

fn name(template: &str, preset: Option<&str>) -> TemplateName {
    TemplateName {
        organization: "default".to_owned(),
        template: template.to_owned(),
        preset: preset.map(str::to_owned),
    }
}

/// Lookups that arrive together share batches, and each gets what it would get alone: the
/// template with its active version's preset, the template alone (no preset asked for, or
/// none of that name), nothing for an unknown or deleted template or organization.
#[tokio::test]
async fn concurrent_lookups_are_resolved_together_each_with_its_own_answer() {
    let db = TestDatabase::new().await;
    let mut conn = db.conn().await;
    let (go, go_version) = seed::template(&mut conn, "go").await;
    let small = seed::preset(&mut conn, go_version, "small", 1).await;
    let (rust, _) = seed::template(&mut conn, "rust").await;
    seed::template(&mut conn, "gone").await;
    conn.batch_execute("UPDATE templates SET deleted = true WHERE name = 'gone'")
        .await
        .expect("delete a template");

    let found = |template_id, preset_id| Some(FoundTemplate { template_id, preset_id });
    let mut cases = vec![
        (name("go", Some("small")), found(go, Some(small))),
        (name("go", None), found(go, None)),
        (name("go", Some("large")), found(go, None)),
        (name("rust", Some("small")), found(rust, None)),
        (name("gone", None), None),
        (name("nothing", Some("small")), None),
        (TemplateName { organization: "elsewhere".to_owned(), ..name("go", None) }, None),
    ];
    for (asked, expected) in &cases {
        let alone =
            find_template(db.pool(), &asked.organization, &asked.template, asked.preset.as_deref())
                .await
                .expect("find alone");
        assert_eq!(&alone, expected, "{asked:?} alone");
    }
    let all = cases.clone();
    for _ in 0..4 {
        cases.extend(all.iter().cloned());
    }
    let finder = TemplateFinder::new(db.pool().clone());
    let answers = join_all(cases.iter().map(|(asked, _)| {
        let finder = finder.clone();
        let asked = asked.clone();
        async move { finder.find(asked).await }
    }))
    .await;
    for ((asked, expected), answer) in cases.iter().zip(answers) {
        assert_eq!(&answer.expect("find"), expected, "{asked:?} together");
    }
    let batches = finder.batches();
    assert!((1..10).contains(&batches), "{} lookups shared {batches} batches", cases.len());
}
