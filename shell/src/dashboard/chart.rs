//! The small 24-hour chart of a pool, as inline SVG drawn on the server: desired (dashed)
//! against eligible (solid). No chart library, no script.

use chrono::{DateTime, Utc};
use maud::{html, Markup};

use crate::store::pool_samples::{PoolSample, SAMPLES_KEPT};

const WIDTH: f64 = 144.0;
const HEIGHT: f64 = 36.0;

/// `samples` (one preset's, oldest first) over the day ending at `now`.
pub fn pool_chart(samples: &[PoolSample], now: DateTime<Utc>) -> Markup {
    if samples.is_empty() {
        return html! { span.muted { "no samples yet" } };
    }
    let top = samples.iter().map(|s| s.desired.max(s.eligible)).max().unwrap_or(0).max(1);
    let span_secs = SAMPLES_KEPT.num_seconds() as f64;
    let start = now - SAMPLES_KEPT;
    let point = |at: DateTime<Utc>, value: i32| {
        let x = ((at - start).num_seconds() as f64 / span_secs).clamp(0.0, 1.0) * WIDTH;
        let y = HEIGHT - 2.0 - f64::from(value) / f64::from(top) * (HEIGHT - 4.0);
        format!("{x:.1},{y:.1}")
    };
    let line = |pick: fn(&PoolSample) -> i32| {
        samples.iter().map(|s| point(s.sampled_at, pick(s))).collect::<Vec<_>>().join(" ")
    };
    let last = samples.last().map(|s| (s.desired, s.eligible)).unwrap_or_default();
    let label = format!(
        "last 24 hours, {} samples; now desired {}, eligible {}; peak {}",
        samples.len(),
        last.0,
        last.1,
        top
    );
    html! {
        svg.chart viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) width=(WIDTH) height=(HEIGHT)
            role="img" aria-label=(label) {
            title { (label) }
            polyline.desired points=(line(|s| s.desired)) fill="none" stroke-dasharray="3 2";
            polyline.eligible points=(line(|s| s.eligible)) fill="none";
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: &str, desired: i32, eligible: i32) -> PoolSample {
        PoolSample {
            preset_id: uuid::Uuid::nil(),
            sampled_at: at.parse().expect("time"),
            desired,
            eligible,
        }
    }

    #[test]
    fn points_span_the_day_and_scale_to_the_peak() {
        let now: DateTime<Utc> = "2025-06-02T12:00:00Z".parse().expect("now");
        let samples = [sample("2025-06-01T12:00:00Z", 4, 0), sample("2025-06-02T12:00:00Z", 4, 4)];
        let svg = pool_chart(&samples, now).into_string();
        // Desired stays at the top; eligible climbs from the bottom to the top.
        assert!(svg.contains(r#"points="0.0,2.0 144.0,2.0""#), "{svg}");
        assert!(svg.contains(r#"points="0.0,34.0 144.0,2.0""#), "{svg}");
        assert!(svg.contains("now desired 4, eligible 4"), "{svg}");
    }

    #[test]
    fn no_samples_says_so() {
        let now: DateTime<Utc> = "2025-06-02T12:00:00Z".parse().expect("now");
        assert!(pool_chart(&[], now).into_string().contains("no samples yet"));
    }
}
