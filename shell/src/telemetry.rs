//! Logging and metrics set-up shared by every binary.

use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets (seconds) for every `_seconds` histogram: 50 µs to 10 s.
const SECONDS_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Logging and the metrics recorder, as every binary starts them.
pub fn init() -> PrometheusHandle {
    init_logging();
    install_metrics()
}

/// Logs to stderr (stdout is for what a binary prints for its user), as JSON
/// when `SB_LOG_FORMAT=json`; the level comes from `RUST_LOG` (default info).
/// Colours only on a terminal: a log file or collector gets plain text.
pub fn init_logging() {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let json = std::env::var("SB_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let result = if json { builder.json().try_init() } else { builder.try_init() };
    let _ = result;
}

/// Installs the global Prometheus recorder with real histogram buckets, and
/// keeps it tidy in the background. Call once, inside the runtime.
pub fn install_metrics() -> PrometheusHandle {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .expect("bucket list is not empty")
        .install_recorder()
        .expect("the metrics recorder is installed once per process");
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    handle
}
