//! Command-line options (each also readable from `POOLKEEPER_BENCH_<NAME>`): which parts to
//! run and at what sizes. The defaults print every figure of the benchmark.

use anyhow::{bail, Context, Result};

/// A part of the benchmark, selectable with `--parts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Pgbench,
    Prebuilds,
    Claim,
    Lifecycle,
    Workers,
}

impl Part {
    const ALL: [Part; 5] =
        [Part::Pgbench, Part::Prebuilds, Part::Claim, Part::Lifecycle, Part::Workers];

    fn name(self) -> &'static str {
        match self {
            Part::Pgbench => "pgbench",
            Part::Prebuilds => "prebuilds",
            Part::Claim => "claim",
            Part::Lifecycle => "lifecycle",
            Part::Workers => "workers",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub parts: Vec<Part>,
    /// Preset counts of the prebuild scenarios; the largest also hosts the claim benchmark.
    pub presets: Vec<u32>,
    pub per_preset: u32,
    pub workspaces: u32,
    pub due: u32,
    pub claimers: usize,
    pub claims: usize,
    /// Builds of claimed workspaces' history seeded before the claims.
    pub claim_history: u64,
    pub jobs: u32,
    pub workers: Vec<usize>,
    pub pgbench_secs: u32,
    /// Timed repetitions of the snapshot load and the no-op cycle (the median is printed).
    pub repeat: usize,
    /// Sample `pg_stat_activity` during the long phases and print where the time went.
    pub profile: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            parts: Part::ALL.to_vec(),
            presets: vec![100, 1_000, 10_000],
            per_preset: 9,
            workspaces: 100_000,
            due: 10_000,
            claimers: 50,
            claims: 40,
            claim_history: 1_000_000,
            jobs: 2_000,
            workers: vec![1, 4],
            pgbench_secs: 5,
            repeat: 5,
            profile: false,
        }
    }
}

const USAGE: &str = "\
usage: cargo bench -p poolkeeper --bench pg -- [options]
  --quick                  small sizes (a smoke run of every part, well under a minute)
  --parts LIST             pgbench,prebuilds,claim,lifecycle,workers (default: all)
  --presets LIST           preset counts of the prebuild scenarios (default 100,1000,10000)
  --per-preset N           desired prebuilds per preset (default 9)
  --workspaces N           lifecycle: live workspaces (default 100000)
  --due N                  lifecycle: of which due to stop (default 10000)
  --claimers N             concurrent claimers (default 50)
  --claims N               measured claims per claimer (default 40)
  --claim-history N        builds of claimed workspaces' history (people's builds carry
                           their preset) seeded before the claims (default 1000000)
  --jobs N                 jobs per worker-throughput run (default 2000)
  --workers LIST           worker counts (default 1,4)
  --pgbench-secs N         duration of each pgbench reference run (default 5)
  --repeat N               timed repetitions of loads and no-op cycles (default 5)
  --profile                sample the server's processes (running, or waiting on what)
                           during cold starts, the lifecycle tick, claims and workers
Each option may also be set as POOLKEEPER_BENCH_<NAME> (e.g. POOLKEEPER_BENCH_PARTS=claim).";

const KEYS: [&str; 14] = [
    "quick",
    "profile",
    "parts",
    "presets",
    "per-preset",
    "workspaces",
    "due",
    "claimers",
    "claims",
    "claim-history",
    "jobs",
    "workers",
    "pgbench-secs",
    "repeat",
];

impl Options {
    /// Parses `args` (cargo passes `--bench`, which is ignored), falling back to the
    /// environment for options not given.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self> {
        let mut given: Vec<(String, String)> = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--bench" {
                continue;
            }
            if arg == "--help" || arg == "-h" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let Some(flag) = arg.strip_prefix("--") else {
                bail!("unexpected argument {arg:?}\n{USAGE}")
            };
            let (key, value) = match flag.split_once('=') {
                Some((key, value)) => (key.to_owned(), value.to_owned()),
                None if flag == "quick" || flag == "profile" => (flag.to_owned(), "1".to_owned()),
                None => {
                    let value = args.next().with_context(|| format!("--{flag} needs a value"))?;
                    (flag.to_owned(), value)
                }
            };
            if !KEYS.contains(&key.as_str()) {
                bail!("unknown option --{key}\n{USAGE}");
            }
            given.push((key, value));
        }
        for key in KEYS {
            let env = format!("POOLKEEPER_BENCH_{}", key.replace('-', "_").to_uppercase());
            if let Ok(value) = std::env::var(&env) {
                if !given.iter().any(|(k, _)| k == key) {
                    given.push((key.to_owned(), value));
                }
            }
        }
        let mut options = Options::default();
        if given.iter().any(|(k, v)| k == "quick" && v != "0") {
            options = Options {
                presets: vec![100, 1_000],
                workspaces: 10_000,
                due: 1_000,
                claimers: 50,
                claims: 2,
                claim_history: 10_000,
                jobs: 300,
                pgbench_secs: 2,
                repeat: 3,
                ..options
            };
        }
        for (key, value) in given {
            let number = || -> Result<u64> {
                value.trim().parse().with_context(|| format!("--{key}: not a number: {value:?}"))
            };
            match key.as_str() {
                "quick" => {}
                "profile" => options.profile = value != "0",
                "parts" => options.parts = parse_parts(&value)?,
                "presets" => options.presets = parse_list(&key, &value)?,
                "per-preset" => options.per_preset = u32::try_from(number()?)?,
                "workspaces" => options.workspaces = u32::try_from(number()?)?,
                "due" => options.due = u32::try_from(number()?)?,
                "claimers" => options.claimers = usize::try_from(number()?)?,
                "claims" => options.claims = usize::try_from(number()?)?,
                "claim-history" => options.claim_history = number()?,
                "jobs" => options.jobs = u32::try_from(number()?)?,
                "workers" => options.workers = parse_list(&key, &value)?,
                "pgbench-secs" => options.pgbench_secs = u32::try_from(number()?)?,
                "repeat" => options.repeat = usize::try_from(number()?)?,
                _ => unreachable!("keys are checked above"),
            }
        }
        if options.due > options.workspaces {
            bail!("--due ({}) exceeds --workspaces ({})", options.due, options.workspaces);
        }
        options.repeat = options.repeat.max(1);
        options.pgbench_secs = options.pgbench_secs.max(1);
        options.presets.retain(|&n| n > 0);
        options.workers.retain(|&n| n > 0);
        Ok(options)
    }

    pub fn runs(&self, part: Part) -> bool {
        self.parts.contains(&part)
    }
}

fn parse_parts(value: &str) -> Result<Vec<Part>> {
    value
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            Part::ALL
                .into_iter()
                .find(|part| part.name() == name)
                .with_context(|| format!("--parts: unknown part {name:?}\n{USAGE}"))
        })
        .collect()
}

fn parse_list<T: std::str::FromStr>(key: &str, value: &str) -> Result<Vec<T>> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| item.parse().ok().with_context(|| format!("--{key}: not a number: {item:?}")))
        .collect()
}
