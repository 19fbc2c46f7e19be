//! The printed table: one row per figure, each with the machine's core count.

use std::time::Duration;

pub struct Row {
    pub figure: String,
    pub value: String,
    pub target: String,
    pub vs_pgbench: String,
}

#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    /// Adds a row and echoes it at once, so a long run shows progress.
    pub fn row(
        &mut self,
        figure: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        vs_pgbench: impl Into<String>,
    ) {
        let row = Row {
            figure: figure.into(),
            value: value.into(),
            target: target.into(),
            vs_pgbench: vs_pgbench.into(),
        };
        eprintln!("  {}: {}", row.figure, row.value);
        self.rows.push(row);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// A Markdown table (pasteable into README.md) and the notes below it.
    pub fn print(&self, cores: usize) {
        let header = ["Figure", "Value", "Target", "vs pgbench", "Cores"];
        let cores = cores.to_string();
        let cells: Vec<[&str; 5]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.figure.as_str(),
                    r.value.as_str(),
                    r.target.as_str(),
                    r.vs_pgbench.as_str(),
                    cores.as_str(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &cells {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |row: &[&str; 5]| {
            let padded: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, width)| format!("{cell}{}", " ".repeat(width - cell.chars().count())))
                .collect();
            format!("| {} |", padded.join(" | "))
        };
        println!();
        println!("{}", line(&header));
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        println!("|-{}-|", rule.join("-|-"));
        for row in &cells {
            println!("{}", line(row));
        }
        if !self.notes.is_empty() {
            println!();
            for note in &self.notes {
                println!("- {note}");
            }
        }
    }
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// `12.3 ms` or `4.56 s`.
pub fn show(duration: Duration) -> String {
    let millis = ms(duration);
    if millis >= 1000.0 {
        format!("{:.2} s", millis / 1000.0)
    } else if millis >= 10.0 {
        format!("{millis:.1} ms")
    } else {
        format!("{millis:.2} ms")
    }
}

/// `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn rate(per_sec: f64) -> String {
    if per_sec >= 100.0 {
        format!("{}/s", thousands(per_sec.round() as u64))
    } else {
        format!("{per_sec:.1}/s")
    }
}

/// "met (62% of target)" or "MISSED by 1.23 s (+12%)" for an upper bound on a duration.
pub fn verdict(value: Duration, target: Duration) -> String {
    let pct = value.as_secs_f64() / target.as_secs_f64() * 100.0;
    if value <= target {
        format!("≤ {}: met ({pct:.0}% of target)", show(target))
    } else {
        format!("≤ {}: MISSED by {} (+{:.0}%)", show(target), show(value - target), pct - 100.0)
    }
}

/// A rate against a floor: "≥ 10,000/s: met (123% of target)" or "MISSED".
pub fn rate_verdict(per_sec: f64, floor: f64) -> String {
    let pct = per_sec / floor * 100.0;
    if per_sec >= floor {
        format!("≥ {}: met ({pct:.0}% of target)", rate(floor))
    } else {
        format!("≥ {}: MISSED ({pct:.0}% of target)", rate(floor))
    }
}

/// The median of `samples` (sorted in place).
pub fn median(samples: &mut [Duration]) -> Duration {
    percentile(samples, 0.5)
}

/// Nearest-rank percentile of `samples` (sorted in place); zero when empty.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = (p * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}
