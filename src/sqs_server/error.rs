//! Errors in the shapes AWS sends: for the JSON protocol a `__type` body and
//! the `x-amzn-query-error` header; for the Query protocol an XML
//! `ErrorResponse`. The codes are AWS's.

/// One error answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Shape name in the JSON protocol (`QueueDoesNotExist`).
    pub shape: &'static str,
    /// Code in the Query protocol (`AWS.SimpleQueueService.NonExistentQueue`).
    pub code: &'static str,
    pub message: String,
    /// The caller's fault (`Sender`) rather than the server's.
    pub sender: bool,
}

impl ApiError {
    fn new(shape: &'static str, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            shape,
            code,
            message: message.into(),
            sender: true,
        }
    }

    pub fn no_queue() -> ApiError {
        Self::new(
            "QueueDoesNotExist",
            "AWS.SimpleQueueService.NonExistentQueue",
            "The specified queue does not exist.",
        )
    }

    pub fn queue_exists(name: &str) -> ApiError {
        Self::new(
            "QueueNameExists",
            "QueueAlreadyExists",
            format!("A queue already exists with the same name and a different value for attribute(s) of {name}"),
        )
    }

    pub fn receipt_invalid(handle: &str) -> ApiError {
        Self::new(
            "ReceiptHandleIsInvalid",
            "ReceiptHandleIsInvalid",
            format!("The input receipt handle \"{handle}\" is not a valid receipt handle."),
        )
    }

    pub fn message_not_inflight() -> ApiError {
        Self::new(
            "MessageNotInflight",
            "AWS.SimpleQueueService.MessageNotInflight",
            "The message referred to isn't in flight.",
        )
    }

    pub fn invalid_parameter(message: impl Into<String>) -> ApiError {
        Self::new(
            "InvalidParameterValueException",
            "InvalidParameterValue",
            message,
        )
    }

    pub fn missing_parameter(name: &str) -> ApiError {
        Self::new(
            "MissingRequiredParameterException",
            "MissingParameter",
            format!("The request must contain the parameter {name}."),
        )
    }

    pub fn invalid_attribute_name(name: &str) -> ApiError {
        Self::new(
            "InvalidAttributeName",
            "InvalidAttributeName",
            format!("Unknown Attribute {name}."),
        )
    }

    pub fn invalid_attribute_value(message: impl Into<String>) -> ApiError {
        Self::new("InvalidAttributeValue", "InvalidAttributeValue", message)
    }

    pub fn empty_batch() -> ApiError {
        Self::new(
            "EmptyBatchRequest",
            "AWS.SimpleQueueService.EmptyBatchRequest",
            "There should be at least one SendMessageBatchRequestEntry in the request.",
        )
    }

    pub fn too_many_entries(n: usize) -> ApiError {
        Self::new(
            "TooManyEntriesInBatchRequest",
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
            format!("Maximum number of entries per request are 10. You have sent {n}."),
        )
    }

    pub fn ids_not_distinct(id: &str) -> ApiError {
        Self::new(
            "BatchEntryIdsNotDistinct",
            "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
            format!("Id {id} repeated."),
        )
    }

    pub fn invalid_batch_id(id: &str) -> ApiError {
        Self::new(
            "InvalidBatchEntryId",
            "AWS.SimpleQueueService.InvalidBatchEntryId",
            format!("A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long. Invalid id: {id}"),
        )
    }

    pub fn unknown_operation(action: &str) -> ApiError {
        Self::new(
            "UnknownOperationException",
            "InvalidAction",
            format!("The action or operation requested is invalid: {action}"),
        )
    }

    pub fn malformed(message: impl Into<String>) -> ApiError {
        Self::new("SerializationException", "MalformedQueryString", message)
    }

    /// The JSON protocol body.
    pub fn json_body(&self) -> String {
        serde_json::json!({
            "__type": format!("com.amazonaws.sqs#{}", self.shape),
            "message": self.message,
        })
        .to_string()
    }

    /// The `x-amzn-query-error` header value.
    pub fn query_error_header(&self) -> String {
        format!(
            "{};{}",
            self.code,
            if self.sender { "Sender" } else { "Receiver" }
        )
    }
}
