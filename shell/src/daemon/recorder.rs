//! The flight recorder: every cycle's replay input and decisions, as replay files (docs/replay-format.md), so
//! `poolkeeper replay DIR/<cycle>.json` reproduces what the daemon decided.

use std::path::PathBuf;

use poolkeeper_core::{ReplayInput, ReplayOutput};

#[derive(Debug, Clone)]
pub struct Recorder {
    dir: PathBuf,
    keep: usize,
}

impl Recorder {
    pub fn new(dir: PathBuf, keep: usize) -> Self {
        Self { dir, keep: keep.max(1) }
    }

    /// Writes `<cycle>.json` and `<cycle>.decisions.json`, then drops the oldest cycles
    /// beyond `keep`. `cycle` sorts by time (it starts with the UTC instant).
    pub fn record(
        &self,
        cycle: &str,
        input: &ReplayInput,
        output: &ReplayOutput,
    ) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let input = serde_json::to_vec_pretty(input).map_err(std::io::Error::other)?;
        let output = serde_json::to_vec_pretty(output).map_err(std::io::Error::other)?;
        std::fs::write(self.dir.join(format!("{cycle}.json")), input)?;
        std::fs::write(self.dir.join(format!("{cycle}.decisions.json")), output)?;
        self.prune()
    }

    fn prune(&self) -> std::io::Result<()> {
        let mut inputs: Vec<String> = std::fs::read_dir(&self.dir)?
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".json") && !name.ends_with(".decisions.json"))
            .collect();
        inputs.sort();
        let excess = inputs.len().saturating_sub(self.keep);
        for name in &inputs[..excess] {
            let stem = name.trim_end_matches(".json");
            std::fs::remove_file(self.dir.join(name))?;
            let _ = std::fs::remove_file(self.dir.join(format!("{stem}.decisions.json")));
        }
        Ok(())
    }
}

/// A file-name-safe, time-ordered cycle name: `20250602T090000.123Z-prebuilds`.
pub fn cycle_name(now: chrono::DateTime<chrono::Utc>, kind: &str) -> String {
    format!("{}-{kind}", now.format("%Y%m%dT%H%M%S%.3fZ"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_cycles_only() {
        let dir =
            std::env::temp_dir().join(format!("poolkeeper-recorder-{}", uuid::Uuid::new_v4()));
        let recorder = Recorder::new(dir.clone(), 2);
        let base = chrono::DateTime::parse_from_rfc3339("2025-06-02T09:00:00Z")
            .expect("instant")
            .with_timezone(&chrono::Utc);
        for minute in 0..4 {
            let now = base + chrono::Duration::minutes(minute);
            let input = ReplayInput::new(now);
            let output = poolkeeper_core::run_replay(&input);
            recorder.record(&cycle_name(now, "prebuilds"), &input, &output).expect("record");
        }
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                "20250602T090200.000Z-prebuilds.decisions.json",
                "20250602T090200.000Z-prebuilds.json",
                "20250602T090300.000Z-prebuilds.decisions.json",
                "20250602T090300.000Z-prebuilds.json",
            ]
        );
        let text = std::fs::read_to_string(dir.join(&names[1])).expect("read");
        assert!(poolkeeper_core::parse_replay(&text).is_ok(), "a recorded cycle replays");
        let _ = std::fs::remove_dir_all(dir);
    }
}
