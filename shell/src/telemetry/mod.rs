//! Metrics (Prometheus text format) and tracing setup.

pub mod logging;
pub mod metrics;
pub mod pool_state;

pub use metrics::Metrics;
pub use pool_state::{PoolState, PrebuildTotals, PresetSeries};
