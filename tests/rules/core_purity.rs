//! The core is pure: it depends on no I/O crate and reads no clock, environment or file.
//! (README "Architecture" lists this invariant; this test enforces it.)

use std::path::{Path, PathBuf};
use std::process::Command;

/// Crates that do I/O (or pull in a runtime) and must never be in the core's dependency tree.
const FORBIDDEN_CRATES: &[&str] = &[
    "tokio",
    "diesel",
    "diesel-async",
    "deadpool",
    "postgres",
    "tokio-postgres",
    "mio",
    "socket2",
    "hyper",
    "axum",
    "reqwest",
    "async-std",
    "futures-io",
    "libc-print",
    "tracing-subscriber",
    "rand",
    "getrandom",
];
// Not listed: `iana-time-zone`, which the `cron` crate drags in through chrono's `clock`
// feature. The core never asks for the local zone; `core_sources_read_no_clock_env_or_file`
// rejects any call that would.

/// Source snippets that would read the clock, the environment or the file system.
const FORBIDDEN_CALLS: &[&str] = &[
    "Utc::now",
    "Local::now",
    "SystemTime",
    "Instant::now",
    "std::env",
    "std::fs",
    "std::net",
    "std::process",
    "std::thread",
    "thread_rng",
];

#[test]
fn core_dependency_tree_has_no_io_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["tree", "-p", "poolkeeper-core", "-e", "normal", "--prefix", "none", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    let crates: Vec<&str> =
        tree.lines().filter_map(|line| line.split_whitespace().next()).collect();
    assert!(crates.contains(&"chrono"), "unexpected cargo tree output:\n{tree}");
    for forbidden in FORBIDDEN_CRATES {
        assert!(
            !crates.contains(forbidden),
            "poolkeeper-core depends on the I/O crate {forbidden}:\n{tree}"
        );
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read core source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn core_sources_read_no_clock_env_or_file() {
    let mut files = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("core/src"), &mut files);
    assert!(!files.is_empty());
    let mut offences = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read core source");
        for (number, line) in text.lines().enumerate() {
            for call in FORBIDDEN_CALLS {
                if line.contains(call) && !line.trim_start().starts_with("//") {
                    offences.push(format!("{}:{}: {call}", file.display(), number + 1));
                }
            }
        }
    }
    assert!(offences.is_empty(), "core must stay pure:\n{}", offences.join("\n"));
}

/// What builds or runs a query with diesel.
const QUERY_BUILDING: &[&str] = &[
    "diesel::prelude",
    "RunQueryDsl",
    "QueryDsl",
    "sql_query",
    "diesel::update",
    "diesel::insert_into",
    "diesel::delete",
    "::table",
];

/// Only the store (and the database plumbing under db/) writes SQL: every other module of
/// the shell calls store functions (README "Architecture").
#[test]
fn only_the_store_and_db_build_queries() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("shell/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let allowed = [src.join("store"), src.join("db")];
    let mut checked = 0;
    let mut offences = Vec::new();
    for file in files.iter().filter(|f| !allowed.iter().any(|dir| f.starts_with(dir))) {
        checked += 1;
        let text = std::fs::read_to_string(file).expect("read shell source");
        for (number, line) in text.lines().enumerate() {
            for pattern in QUERY_BUILDING {
                if line.contains(pattern) && !line.trim_start().starts_with("//") {
                    offences.push(format!("{}:{}: {pattern}", file.display(), number + 1));
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} files outside the store were read");
    assert!(offences.is_empty(), "queries outside the store:\n{}", offences.join("\n"));
}

/// The store takes `now` from its caller, like the core: it never reads the clock itself, so
/// a test (or a replay) decides what time it is.
#[test]
fn the_store_reads_no_clock() {
    let store = Path::new(env!("CARGO_MANIFEST_DIR")).join("shell/src/store");
    let mut files = Vec::new();
    rust_files(&store, &mut files);
    assert!(files.len() > 10, "only {} store files were read", files.len());
    let offences: Vec<String> = files
        .iter()
        .flat_map(|file| {
            let text = std::fs::read_to_string(file).expect("read store source");
            text.lines()
                .enumerate()
                .filter(|(_, line)| {
                    line.contains("Utc::now()") && !line.trim_start().starts_with("//")
                })
                .map(|(number, _)| format!("{}:{}", file.display(), number + 1))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(offences.is_empty(), "the store reads the clock:\n{}", offences.join("\n"));
}
