//! The error vocabulary shared by every crate.
//!
//! Every failure a caller can see is an [`ApiError`]: a coarse [`ErrorCode`]
//! (mapped 1:1 onto a gRPC code by `patron-runtime`), a stable UPPER_SNAKE
//! `reason` for `google.rpc.ErrorInfo`, a message safe to show to the caller,
//! and the offending fields for `google.rpc.BadRequest`.

use std::{borrow::Cow, fmt, time::Duration};

/// What kind of failure, independent of transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    /// Concurrency conflict, e.g. a stale etag.
    Aborted,
    ResourceExhausted,
    Unauthenticated,
    PermissionDenied,
    DeadlineExceeded,
    /// A dependency (database, peer service) is down; retrying may help.
    Unavailable,
    /// Capability not built yet.
    Unimplemented,
    /// A bug or an unexpected state. Details are logged, never sent.
    Internal,
}

/// One offending request field (AIP-193 `BadRequest.FieldViolation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request, e.g. `customer.email` or `transactions[3].amount`.
    pub field: String,
    pub description: String,
}

/// A failure as a caller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    /// Stable machine-readable reason, UPPER_SNAKE (`ErrorInfo.reason`).
    pub reason: Cow<'static, str>,
    pub message: String,
    pub violations: Vec<FieldViolation>,
    /// Hint for `RetryInfo` on retryable failures.
    pub retry_after: Option<Duration>,
    /// Internal detail for the server log; never sent to the caller.
    pub detail: Option<String>,
}

impl ApiError {
    pub fn new(
        code: ErrorCode,
        reason: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            code,
            reason: reason.into(),
            message: message.into(),
            violations: Vec::new(),
            retry_after: None,
            detail: None,
        }
    }

    /// INVALID_ARGUMENT for a single field.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        let mut violations = Violations::new();
        violations.add(field, description);
        violations.into_error()
    }

    pub fn not_found(kind: &str, id: &str) -> Self {
        Self::new(
            ErrorCode::NotFound,
            "NOT_FOUND",
            format!("{kind} {id:?} not found"),
        )
    }

    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::AlreadyExists, "ALREADY_EXISTS", message)
    }

    pub fn failed_precondition(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::FailedPrecondition, reason, message)
    }

    pub fn aborted(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Aborted, reason, message)
    }

    /// A dependency is down. `detail` is for the log only.
    pub fn unavailable(message: impl Into<String>, detail: impl fmt::Display) -> Self {
        Self {
            retry_after: Some(Duration::from_secs(1)),
            detail: Some(detail.to_string()),
            ..Self::new(ErrorCode::Unavailable, "UNAVAILABLE", message)
        }
    }

    /// An internal failure. `detail` is for the log only; the caller gets a generic message.
    pub fn internal(detail: impl fmt::Display) -> Self {
        Self {
            detail: Some(detail.to_string()),
            ..Self::new(ErrorCode::Internal, "INTERNAL", "internal error")
        }
    }

    pub fn with_violations(mut self, violations: Vec<FieldViolation>) -> Self {
        self.violations = violations;
        self
    }

    /// Prefixes every violation's field path, e.g. `email` -> `customer.email`.
    pub fn within(mut self, prefix: &str) -> Self {
        for v in &mut self.violations {
            v.field = if v.field.is_empty() {
                prefix.to_owned()
            } else {
                format!("{prefix}.{}", v.field)
            };
        }
        self
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({}): {}", self.code, self.reason, self.message)?;
        for v in &self.violations {
            write!(f, "; {}: {}", v.field, v.description)?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// Collects field violations while validating a request, so the caller sees
/// every problem at once rather than one per round trip.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Records the violations of a nested validation under `prefix`.
    pub fn extend_within(&mut self, prefix: &str, err: ApiError) {
        self.0.extend(err.within(prefix).violations);
    }

    /// Runs `f` and keeps its error's violations (under `prefix`), returning its value if any.
    pub fn check<T>(&mut self, prefix: &str, result: Result<T, ApiError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                if e.violations.is_empty() {
                    self.add(prefix, e.message);
                } else {
                    self.extend_within(prefix, e);
                }
                None
            }
        }
    }

    /// Keeps a failed result's violations as they are (their fields are
    /// already full paths), returning the value on success.
    pub fn take<T>(&mut self, result: Result<T, ApiError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) if e.violations.is_empty() => {
                self.add("", e.message);
                None
            }
            Err(e) => {
                self.0.extend(e.violations);
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_error(self) -> ApiError {
        let message = match self.0.as_slice() {
            [one] => format!("invalid {}: {}", one.field, one.description),
            many => format!("{} invalid fields", many.len()),
        };
        ApiError::new(ErrorCode::InvalidArgument, "INVALID_ARGUMENT", message)
            .with_violations(self.0)
    }

    /// `Ok(())` when nothing was recorded.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.into_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_violations_carry_the_full_path() {
        let inner = ApiError::invalid_field("email", "not an email address");
        let mut v = Violations::new();
        v.extend_within("customers[2]", inner);
        let err = v.into_error();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert_eq!(err.violations[0].field, "customers[2].email");
        assert!(err.message.contains("customers[2].email"));
    }

    #[test]
    fn no_violations_is_ok() {
        assert!(Violations::new().finish().is_ok());
    }
}
