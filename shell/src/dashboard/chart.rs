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
    let last = samples.last().map(|s| (s.desired, s.eligible)).unwrap_or_default();
    // Each line runs on to now at its last value (a pool holds it until the next sample),
    // and ends in a dot, so that a pool sampled for minutes only still shows.
    let line = |pick: fn(&PoolSample) -> i32, now_value: i32| {
        let mut points: Vec<String> =
            samples.iter().map(|s| point(s.sampled_at, pick(s))).collect();
        points.push(point(now, now_value));
        points.join(" ")
    };
    let end = |value: i32| {
        let xy = point(now, value);
        let (x, y) = xy.split_once(',').unwrap_or(("0", "0"));
        (x.to_owned(), y.to_owned())
    };
    let (desired_end, eligible_end) = (end(last.0), end(last.1));
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
            rect.frame x="0" y="0" width=(WIDTH) height=(HEIGHT);
            polyline.desired points=(line(|s| s.desired, last.0)) fill="none" stroke-dasharray="3 2";
            polyline.eligible points=(line(|s| s.eligible, last.1)) fill="none";
            circle.desired cx=(desired_end.0) cy=(desired_end.1) r="2.5";
            circle.eligible cx=(eligible_end.0) cy=(eligible_end.1) r="2";
        }
        br;
        span.legend { "desired " (last.0) " · eligible " (last.1) " · peak " (top) }
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
        assert!(svg.contains(r#"points="0.0,2.0 144.0,2.0 144.0,2.0""#), "{svg}");
        assert!(svg.contains(r#"points="0.0,34.0 144.0,2.0 144.0,2.0""#), "{svg}");
        assert!(svg.contains("now desired 4, eligible 4"), "{svg}");
    }

    #[test]
    fn a_single_sample_runs_on_to_now_and_ends_in_a_dot() {
        let now: DateTime<Utc> = "2025-06-02T12:00:00Z".parse().expect("now");
        let svg = pool_chart(&[sample("2025-06-02T06:00:00Z", 2, 1)], now).into_string();
        assert!(svg.contains(r#"points="108.0,18.0 144.0,18.0""#), "{svg}");
        assert!(svg.contains(r#"<circle class="desired" cx="144.0" cy="2.0""#), "{svg}");
        assert!(svg.contains("desired 2 · eligible 1 · peak 2"), "{svg}");
    }

    #[test]
    fn no_samples_says_so() {
        let now: DateTime<Utc> = "2025-06-02T12:00:00Z".parse().expect("now");
        assert!(pool_chart(&[], now).into_string().contains("no samples yet"));
    }
}
