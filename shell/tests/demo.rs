//! `poolkeeper demo --exit-after scenario` end to end: a throw-away PostgreSQL, the pools
//! filling, claims (and the claimed pool growing with them), and a template version rollout,
//! all within a bounded time.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(240);

fn read_all(mut stream: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let mut bytes = Vec::new();
        if stream.read_to_end(&mut bytes).is_ok() {
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

/// `pool <template>/<preset> [...]: desired N starting S running R eligible E ...` with
/// N > 0 and E >= N.
fn pool_is_full(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("pool ") else { return false };
    let words: Vec<&str> = rest.split_whitespace().collect();
    let number = |name: &str| {
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1))
            .and_then(|w| w.parse::<u32>().ok())
    };
    matches!((number("desired"), number("eligible")), (Some(d), Some(e)) if d > 0 && e >= d)
}

#[test]
fn demo_scenario_fills_pools_claims_and_rolls_out() {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_poolkeeper"))
        .args(["demo", "--exit-after", "scenario"])
        .env_remove("POOLKEEPER_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the poolkeeper binary starts");
    let stdout = read_all(child.stdout.take().expect("piped stdout"));
    let stderr = read_all(child.stderr.take().expect("piped stderr"));
    let status = loop {
        match child.try_wait().expect("waiting for the demo") {
            Some(status) => break Some(status),
            None if started.elapsed() > TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => thread::sleep(Duration::from_millis(200)),
        }
    };
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    let context = format!("--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    let Some(status) = status else {
        panic!("the demo did not finish within {}s\n{context}", TIMEOUT.as_secs());
    };
    assert!(status.success(), "the demo failed with {status}\n{context}");

    let lines: Vec<&str> = stdout.lines().collect();
    let position = |what: &dyn Fn(&str) -> bool| lines.iter().position(|l| what(l));
    let full = position(&pool_is_full).unwrap_or_else(|| panic!("no full pool\n{context}"));
    let claim = position(&|l| l.starts_with("claim: ") && l.contains("prebuild claimed"))
        .unwrap_or_else(|| panic!("no prebuild claimed\n{context}"));
    // The claimed pool follows its demand (rules §4 "Autoscale"): it grew after the burst.
    let grown = position(&|l| l.starts_with("autoscale: ") && l.contains(" grew from "))
        .unwrap_or_else(|| panic!("the claimed pool did not grow\n{context}"));
    let rollout = position(&|l| l.starts_with("rollout: ") && l.contains("is now active"))
        .unwrap_or_else(|| panic!("no rollout started\n{context}"));
    let old_pool = position(&|l| l.starts_with("pool ") && l.contains("old]"))
        .unwrap_or_else(|| panic!("the old pool was never shown\n{context}"));
    let done = position(&|l| l.starts_with("rollout: complete"))
        .unwrap_or_else(|| panic!("the rollout never completed\n{context}"));
    let complete = position(&|l| l == "scenario complete")
        .unwrap_or_else(|| panic!("no 'scenario complete'\n{context}"));
    assert!(
        full < claim
            && claim < grown
            && grown < rollout
            && rollout < old_pool
            && old_pool < done
            && done < complete,
        "events out of order\n{context}"
    );
    // Each pool of the new version is full in its last report before "rollout: complete".
    let mut last: std::collections::BTreeMap<&str, &str> = std::collections::BTreeMap::new();
    for line in &lines[rollout..done] {
        if let Some((key, _)) = line.split_once("]:") {
            last.insert(key, line);
        }
    }
    let new_pools: Vec<&&str> =
        last.iter().filter(|(key, _)| key.ends_with("[v2 active")).map(|(_, l)| l).collect();
    assert!(
        !new_pools.is_empty() && new_pools.iter().all(|l| pool_is_full(l)),
        "the new version's pools were not full at the end\n{context}"
    );
    // Where to look next: the API and metrics addresses, and a claim to copy.
    assert!(
        lines.iter().any(|l| l.starts_with("demo: metrics on http://127.0.0.1:")),
        "the metrics address was not printed\n{context}"
    );
    // The dashboard's address and an owner's token to paste into its sign-in form.
    assert!(
        lines.iter().any(|l| l.starts_with("demo: dashboard on http://127.0.0.1:")
            && l.contains("/dashboard (sign in with this owner token: pk_")),
        "the dashboard's address was not printed\n{context}"
    );
    let example = position(&|l| l.starts_with("api: try  curl -s -X POST http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no API example\n{context}"));
    assert!(complete < example, "the API example came before the scenario ended\n{context}");
    assert!(stdout.contains("throw-away PostgreSQL server stopped"), "{context}");
}
