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
            format!("A queue already exists with the same name and a different value for attribute(s) of {}", echo(name)),
        )
    }

    pub fn receipt_invalid(handle: &str) -> ApiError {
        Self::new(
            "ReceiptHandleIsInvalid",
            "ReceiptHandleIsInvalid",
            format!(
                "The input receipt handle \"{}\" is not a valid receipt handle.",
                echo(handle)
            ),
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
            format!("Unknown Attribute {}.", echo(name)),
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
            format!("Id {} repeated.", echo(id)),
        )
    }

    pub fn invalid_batch_id(id: &str) -> ApiError {
        Self::new(
            "InvalidBatchEntryId",
            "AWS.SimpleQueueService.InvalidBatchEntryId",
            format!("A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long. Invalid id: {}", echo(id)),
        )
    }

    pub fn unknown_operation(action: &str) -> ApiError {
        Self::new(
            "UnknownOperationException",
            "InvalidAction",
            format!(
                "The action or operation requested is invalid: {}",
                echo(action)
            ),
        )
    }

    pub fn malformed(message: impl Into<String>) -> ApiError {
        Self::new("SerializationException", "MalformedQueryString", message)
    }

    /// A JSON value of the wrong type, worded as AWS words it
    /// (`STRING_VALUE can not be converted to an Integer`).
    pub fn wrong_type(found: &serde_json::Value, wanted: &str) -> ApiError {
        let found = match found {
            serde_json::Value::Null => "NULL_VALUE",
            serde_json::Value::Bool(_) => "BOOLEAN_VALUE",
            serde_json::Value::Number(_) => "NUMBER_VALUE",
            serde_json::Value::String(_) => "STRING_VALUE",
            serde_json::Value::Array(_) => "START_ARRAY",
            serde_json::Value::Object(_) => "START_OBJECT",
        };
        Self::malformed(format!("{found} can not be converted to {wanted}"))
    }

    pub fn batch_too_long(limit: usize, sent: usize) -> ApiError {
        Self::new(
            "BatchRequestTooLong",
            "AWS.SimpleQueueService.BatchRequestTooLong",
            format!(
                "Batch requests cannot be longer than {limit} bytes. You have sent {sent} bytes."
            ),
        )
    }

    pub fn purge_in_progress(queue: &str) -> ApiError {
        Self::new(
            "PurgeQueueInProgress",
            "AWS.SimpleQueueService.PurgeQueueInProgress",
            format!("Only one PurgeQueue operation on {queue} is allowed every 60 seconds."),
        )
    }

    /// A limit of this server (memory), in the shape AWS uses for its own
    /// limits (`OverLimit`, 403).
    pub fn over_limit(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 403,
            ..Self::new("OverLimit", "OverLimit", message)
        }
    }

    /// The JSON protocol body.
    pub fn json_body(&self) -> String {
        serde_json::json!({
            "__type": format!("com.amazonaws.sqs#{}", self.shape),
            "message": self.message,
        })
        .to_string()
    }

    /// The `x-amzn-query-error` header value; none for a body the JSON
    /// protocol could not read, which has no Query counterpart.
    pub fn query_error_header(&self) -> Option<String> {
        (self.shape != "SerializationException").then(|| {
            format!(
                "{};{}",
                self.code,
                if self.sender { "Sender" } else { "Receiver" }
            )
        })
    }
}

/// Longest piece of a caller's value repeated in an error message.
const MAX_ECHO_CHARS: usize = 128;

/// A caller's value as repeated in an error message: cut after
/// [`MAX_ECHO_CHARS`] characters, so that a huge value does not come back
/// in full.
pub fn echo(value: &str) -> String {
    match value.char_indices().nth(MAX_ECHO_CHARS) {
        None => value.to_string(),
        Some((cut, _)) => format!("{}...", &value[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_value_is_not_echoed_in_full() {
        let handle = "h".repeat(1 << 20);
        let e = ApiError::receipt_invalid(&handle);
        assert!(e.message.len() < 300, "{} bytes echoed", e.message.len());
        assert!(e.message.contains(&"h".repeat(MAX_ECHO_CHARS)));
        assert_eq!(echo("short"), "short");
        assert_eq!(echo(&"é".repeat(200)).chars().count(), MAX_ECHO_CHARS + 3);
    }
}
