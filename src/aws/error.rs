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
        matches!(
            self.code.as_deref(),
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
}

/// SQS: throttling and server faults pass; other refusals do not.
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
                    // A clock off from AWS's: the next try is signed with
                    // AWS's time.
                    | "RequestTimeTooSkewed"
                    | "RequestExpired"
                    | "RequestInTheFuture"
            )
        );
        !(transient_code || status >= 500 || status == 429)
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
