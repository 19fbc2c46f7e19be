//! Metrics (Prometheus text format) and tracing setup.

pub mod logging;
pub mod metrics;

pub use metrics::Metrics;
