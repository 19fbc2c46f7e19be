//! The machine's CPU time, from `/proc/stat` (Linux): on a shared machine whose speed drifts,
//! the CPU a piece of work took is steadier than the wall time it took. Counts every
//! process (the server's and the benchmark's), not time stolen by the hypervisor.

use std::time::Duration;

/// CPU time used so far by all processes (user, nice, system, interrupts); `None` where
/// `/proc/stat` cannot be read.
pub fn used() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line.split_whitespace().filter_map(|n| n.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = [0, 1, 2, 5, 6].iter().map(|&i| ticks.get(i).copied().unwrap_or(0)).sum::<u64>();
    // /proc/stat counts in USER_HZ, which Linux fixes at 100 per second.
    Some(Duration::from_millis(busy * 10))
}
