//! Logs and metrics in one place: JSON logs through `tracing`, and one CloudWatch Embedded
//! Metric Format line per run on stdout (Lambda ships stdout to CloudWatch Logs, which turns
//! EMF lines into metrics).

use std::time::{SystemTime, UNIX_EPOCH};

use mirror::report::{CapacityReport, METRICS_NAMESPACE, Report};
use tracing::{error, info};

/// JSON logs on stdout, level from `RUST_LOG` (default `info`). Call once, from `main`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .init();
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Log a mirror run's report and print its EMF line.
pub fn emit_report(report: &Report) {
    let json = serde_json::to_string(report).unwrap_or_default();
    if report.errors.count > 0 {
        error!(report = %json, errors = report.errors.count, "run finished with errors");
    } else {
        info!(report = %json, "run finished");
    }
    println!("{}", report.emf_line(METRICS_NAMESPACE, now_ms()));
}

/// Log a size-fleet run's report and print its EMF line.
pub fn emit_capacity(report: &CapacityReport) {
    let json = serde_json::to_string(report).unwrap_or_default();
    if report.error.is_some() {
        error!(report = %json, "fleet sizing finished with an error");
    } else {
        info!(report = %json, "fleet sizing finished");
    }
    println!("{}", report.emf_line(METRICS_NAMESPACE, now_ms()));
}
