//! The one place where [`HandshakeError`] becomes a gRPC [`Status`].
//!
//! Clients read the contract's numeric code from the `ErrorInfo` detail
//! (`metadata["code"]`); the gRPC status code is chosen so that generic tooling (retries,
//! dashboards) also does the right thing. Internal errors are logged with their cause and the
//! trace id; the caller only sees the trace id.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use videochat_proto::v1::ERROR_DOMAIN;

use crate::error::{ErrorCode, HandshakeError};

impl From<HandshakeError> for Status {
    fn from(error: HandshakeError) -> Self {
        // Webhooks come over HTTP: the gateway turns these codes into 401, 400 and 404.
        if let HandshakeError::Webhook(rejected) = &error {
            use crate::engine::events::Rejected;
            let message = rejected.to_string();
            return match rejected {
                Rejected::Unverified(_) => Status::unauthenticated(message),
                Rejected::Malformed(_) => Status::invalid_argument(message),
                Rejected::NoReceiver(_) => Status::unimplemented(message),
            };
        }
        let code = error.code();
        let grpc_code = match code {
            ErrorCode::InvalidData | ErrorCode::InvalidTarget => Code::InvalidArgument,
            ErrorCode::TargetUserNotFound
            | ErrorCode::RequestNotFound
            | ErrorCode::VideochatNotFound => Code::NotFound,
            ErrorCode::TargetUserNotAvailable | ErrorCode::RequestNotPending => {
                Code::FailedPrecondition
            }
            ErrorCode::NotAllowed => Code::PermissionDenied,
            ErrorCode::TooManyPendingRings
            | ErrorCode::TooManyInvites
            | ErrorCode::TooManySockets => Code::ResourceExhausted,
            ErrorCode::Internal => Code::Internal,
        };
        let message = if code == ErrorCode::Internal {
            let trace_id = videochat_telemetry::current_trace_id();
            tracing::error!(error = %error, error.debug = ?error, %trace_id, "internal error");
            format!("internal error (trace id {trace_id})")
        } else {
            error.to_string()
        };
        let mut details = ErrorDetails::with_error_info(
            code.reason(),
            ERROR_DOMAIN,
            HashMap::from([("code".to_owned(), (code as i32).to_string())]),
        );
        if let HandshakeError::InvalidArgument { field, reason } = &error {
            details.add_bad_request_violation(*field, reason.clone());
        }
        Status::with_error_details(grpc_code, message, details)
    }
}

/// Validation of an RPC field, as a 1002 error naming the field.
pub(crate) fn invalid(field: &'static str, reason: impl ToString) -> Status {
    HandshakeError::invalid(field, reason).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract_code(status: &Status) -> Option<String> {
        status
            .get_details_error_info()
            .and_then(|info| info.metadata.get("code").cloned())
    }

    #[test]
    fn application_errors_carry_the_contract_code() {
        let status = Status::from(HandshakeError::TargetUserNotAvailable);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(contract_code(&status).as_deref(), Some("10011"));
        assert_eq!(status.message(), "target user is not available");
    }

    #[test]
    fn validation_errors_name_the_field() {
        let status = invalid("target_user", "must not be empty");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(contract_code(&status).as_deref(), Some("1002"));
        let bad_request = status.get_details_bad_request().expect("BadRequest detail");
        assert_eq!(bad_request.field_violations[0].field, "target_user");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let status = Status::from(HandshakeError::Store(crate::store::StoreError::Url(
            "secret detail".into(),
        )));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(contract_code(&status).as_deref(), Some("1004"));
        assert!(!status.message().contains("secret detail"));
        assert!(status.message().contains("trace id"));
    }
}
