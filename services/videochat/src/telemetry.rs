//! Process-wide telemetry: logs and the Prometheus recorder. Each is installed once per process
//! (tests start many stacks in one process and share them).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::cli::LogConfig;

/// Installs logs (text, or JSON lines with `VIDEOCHAT_LOG_FORMAT=json`) and OpenTelemetry
/// tracing (exported when `OTEL_EXPORTER_OTLP_ENDPOINT` is set). Keep the guard until exit.
pub fn init(service_name: &str, config: &LogConfig) -> videochat_telemetry::TelemetryGuard {
    let format = if config.log_format == "json" {
        videochat_telemetry::LogFormat::Json
    } else {
        videochat_telemetry::LogFormat::Text
    };
    videochat_telemetry::init(service_name, format, &config.log_filter)
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus handle, installing the recorder on first use.
pub fn prometheus() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0,
                ])
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            handle
        })
        .clone()
}
