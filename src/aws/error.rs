//! Failed AWS calls, classified for retrying. One error type serves every
//! service; what differs is which answers are worth another try, decided per
//! service by a [`Classify`] marker type.

use std::marker::PhantomData;

use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

/// Which refusals of a service are for good.
pub trait Classify {
    /// Whether an answer with this error `code` and HTTP `status` would come
    /// again on retry.
    fn permanent(code: Option<&str>, status: u16) -> bool;
}

/// A failed call to the service `S`.
pub struct AwsError<S> {
    pub message: String,
    /// The service's error code, when it answered with one.
    pub code: Option<String>,
    /// The server understood the request and refused it for good.
    pub permanent: bool,
    service: PhantomData<S>,
}

impl<S> AwsError<S> {
    pub fn new(message: impl Into<String>, permanent: bool) -> Self {
        AwsError {
            message: message.into(),
            code: None,
            permanent,
            service: PhantomData,
        }
    }

    /// A failure worth retrying (no answer, a broken connection, ...).
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(message, false)
    }
}

impl<S> std::fmt::Debug for AwsError<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsError")
            .field("message", &self.message)
            .field("code", &self.code)
            .field("permanent", &self.permanent)
            .finish()
    }
}

impl<S> std::fmt::Display for AwsError<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// An SDK failure: a service answer is classified by `S`; anything else
/// (no connection, a timeout) is worth retrying.
impl<S, E> From<SdkError<E, HttpResponse>> for AwsError<S>
where
    S: Classify,
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    fn from(e: SdkError<E, HttpResponse>) -> Self {
        let permanent = match &e {
            SdkError::ServiceError(s) => S::permanent(s.err().code(), s.raw().status().as_u16()),
            _ => false,
        };
        let message = match e.code() {
            Some(code) => format!("{code}: {}", e.message().unwrap_or("no message")),
            None => DisplayErrorContext(&e).to_string(),
        };
        let mut error = Self::new(message, permanent);
        error.code = e.code().map(str::to_string);
        error
    }
}

impl<S> AwsError<S> {
    /// Whether AWS may have refused the request only because this machine's
    /// clock is off (it then refuses the signature as if it were wrong).
    pub fn may_be_clock_skew(&self) -> bool {
        is_signature_or_skew(self.code.as_deref())
    }

    /// Whether AWS refused the credentials themselves (expired, or unknown
    /// to it): other credentials from the provider may pass.
    pub fn refuses_credentials(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some(
                "ExpiredToken"
                    | "ExpiredTokenException"
                    | "InvalidClientTokenId"
                    | "UnrecognizedClientException"
                    | "InvalidAccessKeyId"
                    | "InvalidToken"
                    | "TokenRefreshRequired"
            )
        )
    }
}

/// A signature refused as wrong or out of date. AWS answers so to a clock
/// far off from its own, and every request signed before the daemon learned
/// AWS's time from an answer is refused alike; the next try is signed with
/// AWS's time.
fn is_signature_or_skew(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "SignatureDoesNotMatch"
                | "InvalidSignatureException"
                | "RequestTimeTooSkewed"
                | "RequestExpired"
                | "RequestInTheFuture"
                | "AuthFailure"
        )
    )
}

/// SQS: throttling, server faults, and signatures refused (see
/// [`is_signature_or_skew`]) pass; other refusals do not. Refused
/// credentials are permanent here; the direct client, which can fetch new
/// ones, makes them transient while that may help.
///
/// Transient means "retry within the caller's own deadline" (a message's
/// visibility, the next tick): a signature that stays wrong fails there. The
/// startup check, which needs a definite answer, bounds its own retries of
/// signature refusals (`queue::check_queue`).
pub enum Sqs {}

impl Classify for Sqs {
    fn permanent(code: Option<&str>, status: u16) -> bool {
        let transient_code = matches!(
            code,
            Some(
                "RequestThrottled"
                    | "ThrottlingException"
                    | "Throttling"
                    | "ServiceUnavailable"
                    | "InternalError"
                    | "InternalFailure"
                    | "KmsThrottled"
                    | "RequestTimeout"
            )
        );
        !(transient_code || is_signature_or_skew(code) || status >= 500 || status == 429)
    }
}

/// DynamoDB: a missing table, denied access and malformed requests stay so;
/// everything else (throttling, capacity, server faults) is retried.
pub enum DynamoDb {}

impl Classify for DynamoDb {
    fn permanent(code: Option<&str>, _status: u16) -> bool {
        matches!(
            code,
            Some(
                "ResourceNotFoundException"
                    | "AccessDeniedException"
                    | "ValidationException"
                    | "UnrecognizedClientException"
            )
        )
    }
}

pub type SqsError = AwsError<Sqs>;
pub type DbError = AwsError<DynamoDb>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqs_retries_throttling_and_server_faults_only() {
        assert!(!Sqs::permanent(Some("RequestThrottled"), 400));
        assert!(!Sqs::permanent(
            Some("AWS.SimpleQueueService.NonExistentQueue"),
            500
        ));
        assert!(!Sqs::permanent(None, 429));
        assert!(Sqs::permanent(
            Some("AWS.SimpleQueueService.NonExistentQueue"),
            400
        ));
        assert!(Sqs::permanent(Some("AccessDenied"), 403));
        assert!(Sqs::permanent(None, 403));
    }

    #[test]
    fn sqs_retries_refused_signatures_and_clock_skew() {
        for code in [
            "SignatureDoesNotMatch",
            "InvalidSignatureException",
            "RequestTimeTooSkewed",
            "RequestExpired",
            "RequestInTheFuture",
            "AuthFailure",
        ] {
            assert!(!Sqs::permanent(Some(code), 403), "{code}");
            assert!(!Sqs::permanent(Some(code), 400), "{code}");
            let e = SqsError {
                code: Some(code.into()),
                ..SqsError::new("x", true)
            };
            assert!(e.may_be_clock_skew() && !e.refuses_credentials(), "{code}");
        }
    }

    #[test]
    fn refused_credentials_are_told_apart_but_permanent_by_themselves() {
        for code in [
            "ExpiredToken",
            "ExpiredTokenException",
            "InvalidClientTokenId",
            "UnrecognizedClientException",
            "InvalidAccessKeyId",
        ] {
            assert!(Sqs::permanent(Some(code), 403), "{code}");
            let e = SqsError {
                code: Some(code.into()),
                ..SqsError::new("x", true)
            };
            assert!(e.refuses_credentials() && !e.may_be_clock_skew(), "{code}");
        }
        for code in ["AccessDenied", "AWS.SimpleQueueService.NonExistentQueue"] {
            let e = SqsError {
                code: Some(code.into()),
                ..SqsError::new("x", true)
            };
            assert!(!e.refuses_credentials() && !e.may_be_clock_skew(), "{code}");
        }
    }

    #[test]
    fn dynamodb_gives_up_on_missing_tables_and_denials() {
        assert!(DynamoDb::permanent(Some("ResourceNotFoundException"), 400));
        assert!(DynamoDb::permanent(Some("AccessDeniedException"), 400));
        assert!(!DynamoDb::permanent(
            Some("ProvisionedThroughputExceededException"),
            400
        ));
        assert!(!DynamoDb::permanent(None, 500));
    }
}
