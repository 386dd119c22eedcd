//! `wshub-loadtest`: a load generator that speaks wshub protocol v1.
//!
//! The scenarios are a library so tests can aim them at servers with known
//! faults (injected delay, dropped messages) and check the figures.

pub mod client;
pub mod latency;
pub mod procfs;
pub mod scenario;
pub mod wire;

/// CPU seconds this process has used so far (user + system).
pub fn own_cpu_seconds() -> f64 {
    procfs::cpu_seconds(std::process::id()).unwrap_or(0.0)
}
