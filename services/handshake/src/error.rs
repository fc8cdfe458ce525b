//! The service's one error type. Every failure of a handshake operation is one of these; the
//! mapping to the wire (gRPC status with the contract's numeric code) lives in
//! [`crate::grpc::status`], and nowhere else.

use crate::domain::RequestStatus;
use crate::engine::EngineError;
use crate::store::StoreError;

/// The contract's error codes (CONTRACT.md §3) that the service can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum ErrorCode {
    InvalidData = 1002,
    Internal = 1004,
    TargetUserNotFound = 1021,
    TargetUserNotAvailable = 10011,
    RequestNotFound = 10012,
    NotAllowed = 10013,
    RequestNotPending = 10014,
    VideochatNotFound = 10015,
    InvalidTarget = 10016,
    TooManyPendingRings = 10017,
    TooManyInvites = 10018,
    TooManySockets = 10019,
}

impl ErrorCode {
    pub fn from_i32(code: i32) -> Option<Self> {
        Some(match code {
            1002 => ErrorCode::InvalidData,
            1004 => ErrorCode::Internal,
            1021 => ErrorCode::TargetUserNotFound,
            10011 => ErrorCode::TargetUserNotAvailable,
            10012 => ErrorCode::RequestNotFound,
            10013 => ErrorCode::NotAllowed,
            10014 => ErrorCode::RequestNotPending,
            10015 => ErrorCode::VideochatNotFound,
            10016 => ErrorCode::InvalidTarget,
            10017 => ErrorCode::TooManyPendingRings,
            10018 => ErrorCode::TooManyInvites,
            10019 => ErrorCode::TooManySockets,
            _ => return None,
        })
    }

    /// The `ErrorCode` enum value name of the proto, used as `ErrorInfo.reason`.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorCode::InvalidData => "ERROR_CODE_INVALID_DATA",
            ErrorCode::Internal => "ERROR_CODE_INTERNAL",
            ErrorCode::TargetUserNotFound => "ERROR_CODE_TARGET_USER_NOT_FOUND",
            ErrorCode::TargetUserNotAvailable => "ERROR_CODE_TARGET_USER_NOT_AVAILABLE",
            ErrorCode::RequestNotFound => "ERROR_CODE_REQUEST_NOT_FOUND",
            ErrorCode::NotAllowed => "ERROR_CODE_NOT_ALLOWED",
            ErrorCode::RequestNotPending => "ERROR_CODE_REQUEST_NOT_PENDING",
            ErrorCode::VideochatNotFound => "ERROR_CODE_VIDEOCHAT_NOT_FOUND",
            ErrorCode::InvalidTarget => "ERROR_CODE_INVALID_TARGET",
            ErrorCode::TooManyPendingRings => "ERROR_CODE_TOO_MANY_PENDING_RINGS",
            ErrorCode::TooManyInvites => "ERROR_CODE_TOO_MANY_INVITES",
            ErrorCode::TooManySockets => "ERROR_CODE_TOO_MANY_SOCKETS",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// 1002: a field of the request is missing or malformed.
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// 1002: the idempotency key was first used for a different operation.
    #[error("event.id {key:?} was already used for {operation}")]
    IdempotencyKeyReused { key: String, operation: String },
    /// 1021
    #[error("target user not found")]
    TargetUserNotFound,
    /// 10011
    #[error("target user is not available")]
    TargetUserNotAvailable,
    /// 10012
    #[error("videochat request not found")]
    RequestNotFound,
    /// 10013
    #[error("not allowed: {0}")]
    NotAllowed(&'static str),
    /// 10014
    #[error("videochat request is no longer pending (it is {})", .0.as_str())]
    RequestNotPending(RequestStatus),
    /// 10015
    #[error("videochat not found, or you are not its participant")]
    VideochatNotFound,
    /// 10016
    #[error("{0}")]
    InvalidTarget(&'static str),
    /// 10017: the caller already has this many rings ringing (`VIDEOCHAT_MAX_PENDING_RINGS_PER_USER`).
    #[error("too many calls ringing at once: at most {0}; wait for an answer or cancel one")]
    TooManyPendingRings(u32),
    /// 10018: the videochat had this many invites in the last minute
    /// (`VIDEOCHAT_MAX_INVITES_PER_VIDEOCHAT_PER_MIN`).
    #[error("too many invites into this videochat: at most {0} per minute; try again shortly")]
    TooManyInvites(u32),
    /// An application error recorded under an idempotency key, answered again as it was.
    #[error("{message}")]
    Replayed { code: ErrorCode, message: String },
    /// 1004: the engine could not mint credentials (misconfiguration or a bug).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// 1004, or a retry when the store reports a conflicting concurrent change.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A media engine's webhook was refused (not signed by the engine, unreadable, or for an
    /// engine not received here). Not a contract error: webhooks are HTTP, not frames.
    #[error(transparent)]
    Webhook(#[from] crate::engine::events::Rejected),
}

impl HandshakeError {
    pub fn invalid(field: &'static str, reason: impl ToString) -> Self {
        HandshakeError::InvalidArgument {
            field,
            reason: reason.to_string(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            HandshakeError::InvalidArgument { .. }
            | HandshakeError::IdempotencyKeyReused { .. }
            | HandshakeError::Webhook(_) => ErrorCode::InvalidData,
            HandshakeError::TargetUserNotFound => ErrorCode::TargetUserNotFound,
            HandshakeError::TargetUserNotAvailable => ErrorCode::TargetUserNotAvailable,
            HandshakeError::RequestNotFound => ErrorCode::RequestNotFound,
            HandshakeError::NotAllowed(_) => ErrorCode::NotAllowed,
            HandshakeError::RequestNotPending(_) => ErrorCode::RequestNotPending,
            HandshakeError::VideochatNotFound => ErrorCode::VideochatNotFound,
            HandshakeError::InvalidTarget(_) => ErrorCode::InvalidTarget,
            HandshakeError::TooManyPendingRings(_) => ErrorCode::TooManyPendingRings,
            HandshakeError::TooManyInvites(_) => ErrorCode::TooManyInvites,
            HandshakeError::Replayed { code, .. } => *code,
            HandshakeError::Engine(_) | HandshakeError::Store(_) => ErrorCode::Internal,
        }
    }

    /// A decision of the state machine about this request (as opposed to a fault): these are
    /// recorded under the idempotency key so that a retry gets the same answer. A limit is not
    /// one: it says "not now", so a retry with the same key once the limit has room is served.
    pub fn is_decision(&self) -> bool {
        !matches!(
            self,
            HandshakeError::TooManyPendingRings(_)
                | HandshakeError::TooManyInvites(_)
                | HandshakeError::Engine(_)
                | HandshakeError::Store(_)
                | HandshakeError::InvalidArgument { .. }
                | HandshakeError::IdempotencyKeyReused { .. }
                | HandshakeError::Replayed { .. }
                | HandshakeError::Webhook(_)
        )
    }

    /// A concurrent change won a race; running the operation again will see it.
    pub fn is_conflict(&self) -> bool {
        matches!(self, HandshakeError::Store(StoreError::Conflict))
    }
}
