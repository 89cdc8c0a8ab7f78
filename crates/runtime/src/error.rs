//! The one place an [`ApiError`] becomes a `tonic::Status`, with AIP-193
//! details: `ErrorInfo` (reason, domain), `BadRequest` field violations and
//! `RetryInfo` for retryable failures. Internal details are logged here and
//! never sent.

use std::collections::HashMap;

use patron_domain::{ApiError, ErrorCode};
use tonic::{Code, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every Patron error.
pub const ERROR_DOMAIN: &str = "patron.dev";

pub type ApiResult<T> = Result<T, ApiError>;

pub fn code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::InvalidArgument => Code::InvalidArgument,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::AlreadyExists => Code::AlreadyExists,
        ErrorCode::FailedPrecondition => Code::FailedPrecondition,
        ErrorCode::Aborted => Code::Aborted,
        ErrorCode::ResourceExhausted => Code::ResourceExhausted,
        ErrorCode::Unauthenticated => Code::Unauthenticated,
        ErrorCode::PermissionDenied => Code::PermissionDenied,
        ErrorCode::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::Unimplemented => Code::Unimplemented,
        ErrorCode::Internal => Code::Internal,
    }
}

/// Builds the status a caller receives.
pub fn to_status(err: ApiError) -> Status {
    match err.code {
        ErrorCode::Internal => {
            tracing::error!(reason = %err.reason, detail = err.detail.as_deref().unwrap_or(""), "internal error")
        }
        ErrorCode::Unavailable => {
            tracing::warn!(reason = %err.reason, detail = err.detail.as_deref().unwrap_or(""), "dependency unavailable")
        }
        _ => {
            tracing::debug!(code = ?err.code, reason = %err.reason, message = %err.message, "request failed")
        }
    }
    let mut details = ErrorDetails::new();
    details.set_error_info(err.reason.to_string(), ERROR_DOMAIN, HashMap::new());
    for v in err.violations.iter().take(MAX_VIOLATIONS) {
        details.add_bad_request_violation(clip(&v.field), clip(&v.description));
    }
    if err.retry_after.is_some() {
        details.set_retry_info(err.retry_after);
    }
    Status::with_error_details(code(err.code), clip(&err.message), details)
}

/// Statuses travel in HTTP/2 headers, which clients cap (16 KiB by
/// default; beyond it the client sees a protocol error instead of our
/// status). Messages often quote the caller's input, so each text is
/// clipped, and so is the number of violations.
const MAX_TEXT: usize = 512;
const MAX_VIOLATIONS: usize = 20;

fn clip(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Turns a handler result into what tonic expects.
pub trait IntoGrpc<T> {
    fn into_grpc(self) -> Result<Response<T>, Status>;
}

impl<T> IntoGrpc<T> for ApiResult<T> {
    fn into_grpc(self) -> Result<Response<T>, Status> {
        self.map(Response::new).map_err(to_status)
    }
}

/// A failed call to another Patron service, as this service's error: the
/// peer being down is UNAVAILABLE (retryable), anything else is our
/// INTERNAL problem (details logged, not forwarded).
pub fn from_peer(peer: &str, status: Status) -> ApiError {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Cancelled => {
            ApiError::unavailable(
                format!("the {peer} service is unavailable"),
                status.message(),
            )
        }
        _ => ApiError::internal(format!(
            "{peer} answered {:?}: {}",
            status.code(),
            status.message()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patron_domain::Violations;

    #[test]
    fn field_violations_and_reason_reach_the_status() {
        let mut v = Violations::new();
        v.add("customer.email", "is not a valid email address");
        let status = to_status(v.into_error());
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad = details.bad_request().expect("bad request details");
        assert_eq!(bad.field_violations[0].field, "customer.email");
        let info = details.error_info().expect("error info");
        assert_eq!(info.reason, "INVALID_ARGUMENT");
        assert_eq!(info.domain, ERROR_DOMAIN);
    }

    #[test]
    fn internal_detail_is_not_sent() {
        let status = to_status(ApiError::internal("password=hunter2 in a query"));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("hunter2"));
    }

    #[test]
    fn long_texts_are_clipped_to_fit_in_headers() {
        let mut v = Violations::new();
        for i in 0..100 {
            v.add(format!("rules[{i}]"), "é".repeat(5_000));
        }
        let mut err = v.into_error();
        err.message = "x".repeat(50_000);
        let status = to_status(err);
        assert!(status.message().len() <= MAX_TEXT + 3);
        let bad = status.get_error_details().bad_request().unwrap().clone();
        assert_eq!(bad.field_violations.len(), MAX_VIOLATIONS);
        assert!(bad.field_violations[0].description.ends_with('…'));
        assert!(status.details().len() < 16 * 1024);
    }

    #[test]
    fn unavailable_carries_retry_info() {
        let status = to_status(ApiError::unavailable("db down", "connection refused"));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.get_error_details().retry_info().is_some());
    }
}
