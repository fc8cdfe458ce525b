//! Error codes on the wire, and the one mapping from gRPC statuses to them.

use tonic::{Code, Status};
use tonic_types::StatusExt;
use videochat_proto::v1::ERROR_DOMAIN;

/// The contract's error codes (CONTRACT §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireCode {
    InvalidFrame,
    UnknownType,
    InvalidData,
    RateLimited,
    Internal,
    /// 10019: the user already holds the most sockets allowed across the service. Not in an
    /// error frame: it names the refusal of the upgrade (HTTP 429) that the service decided.
    TooManySockets,
    /// A code decided by the handshake service (1021, 10011–10018, …).
    Service(i32),
}

impl WireCode {
    pub fn as_i32(self) -> i32 {
        match self {
            WireCode::InvalidFrame => 1000,
            WireCode::UnknownType => 1001,
            WireCode::InvalidData => 1002,
            WireCode::RateLimited => 1003,
            WireCode::Internal => 1004,
            WireCode::TooManySockets => 10019,
            WireCode::Service(code) => code,
        }
    }
}

/// What the client is told when a call to the handshake service fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    pub code: WireCode,
    pub message: String,
}

impl From<Status> for CallError {
    fn from(status: Status) -> Self {
        if let Some(info) = status.get_details_error_info()
            && info.domain == ERROR_DOMAIN
            && let Some(code) = info
                .metadata
                .get("code")
                .and_then(|c| c.parse::<i32>().ok())
        {
            let code = match code {
                1002 => WireCode::InvalidData,
                1004 => WireCode::Internal,
                other => WireCode::Service(other),
            };
            return CallError {
                code,
                message: status.message().to_owned(),
            };
        }
        // No application detail: the service was unreachable or failed before deciding.
        let trace_id = videochat_telemetry::current_trace_id();
        tracing::error!(code = ?status.code(), message = status.message(), %trace_id, "handshake call failed");
        let message = match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                format!("handshake service unavailable, try again (trace id {trace_id})")
            }
            _ => format!("internal error (trace id {trace_id})"),
        };
        CallError {
            code: WireCode::Internal,
            message,
        }
    }
}
