//! Trace correlation for logs and error messages.

/// The id that ties an error message to its log lines and its trace.
pub fn current_trace_id() -> String {
    videochat_telemetry::current_trace_id()
}
