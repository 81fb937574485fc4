//! The three SQS calls on the daemon's hot path (ReceiveMessage,
//! DeleteMessageBatch and ChangeMessageVisibilityBatch), spoken directly in
//! SQS's JSON protocol (AWS JSON 1.0).
//!
//! The SDK's request pipeline (interceptors, endpoint resolution, identity
//! resolution, serializers and deserializers) cost more daemon CPU than
//! delivering the messages did. Here each call is one serde
//! serialization, one SigV4 signature with cached credentials, one HTTP
//! exchange and one parse. Everything else (checking the queue at
//! startup, periodic tasks) still goes through the SDK, whose resolved
//! endpoint this client reuses (see [`EndpointProbe`]) so both always talk
//! to the same place.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, DATE, USER_AGENT};
use http::{Method, Uri};
use http_body_util::Full;
use serde::{Deserialize, Serialize};

use super::credentials::CredentialCache;
use super::error::{Classify, Sqs, SqsError};
use crate::http1::{error_chain, Failure, Pool};

/// Long polls take up to 20 s; a call far past that is a hung connection.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(35);
/// Batch calls answer at once.
const BATCH_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read. A full receive is about 3 MB (ten 256 KiB messages
/// and their attributes); anything far larger is not SQS speaking.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;
/// A clock this far off the endpoint's is corrected when signing (AWS refuses
/// signatures more than 5 minutes off); as the SDK does.
const SKEW_THRESHOLD_S: i64 = 4 * 60;

const JSON_1_0: HeaderValue = HeaderValue::from_static("application/x-amz-json-1.0");
const OUR_AGENT: &str = concat!("sqsd/", env!("CARGO_PKG_VERSION"));

/// An SQS operation this client calls; the value is its `X-Amz-Target`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Receive,
    DeleteBatch,
    VisibilityBatch,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Receive => "ReceiveMessage",
            Action::DeleteBatch => "DeleteMessageBatch",
            Action::VisibilityBatch => "ChangeMessageVisibilityBatch",
        }
    }

    fn target(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Action::Receive => "AmazonSQS.ReceiveMessage",
            Action::DeleteBatch => "AmazonSQS.DeleteMessageBatch",
            Action::VisibilityBatch => "AmazonSQS.ChangeMessageVisibilityBatch",
        })
    }
}

/// How requests reach the endpoint.
enum Transport {
    /// `http://`: hyper's HTTP/1.1 connections directly.
    Plain(Pool),
    /// `https://` (real SQS): reqwest with rustls.
    Tls(reqwest::Client),
}

/// Where and as whom to send; see the module documentation.
pub struct SqsJson {
    /// The endpoint's URL, as the SDK resolved it (`https://sqs.REGION.amazonaws.com/`).
    endpoint: String,
    /// Its path, for the plain transport.
    path: Uri,
    transport: Transport,
    credentials: CredentialCache,
    region: String,
    /// Seconds the endpoint's clock is ahead of ours, when that is enough to
    /// spoil signatures; measured from the `Date` of every answer.
    skew_s: AtomicI64,
}

impl SqsJson {
    /// `connections` bounds the idle connections kept open.
    pub fn new(
        endpoint: &str,
        region: &str,
        credentials: Option<SharedCredentialsProvider>,
        connections: usize,
    ) -> Result<SqsJson, String> {
        let parsed = reqwest::Url::parse(endpoint)
            .map_err(|e| format!("SQS endpoint {endpoint:?} is not a URL: {e}"))?;
        let path = Uri::try_from(parsed.path())
            .map_err(|e| format!("SQS endpoint {endpoint:?} has a bad path: {e}"))?;
        let transport = match Pool::for_url(endpoint, connections, CONNECT_TIMEOUT, false) {
            Some(pool) => Transport::Plain(pool),
            None if parsed.scheme() == "https" => Transport::Tls(
                reqwest::Client::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .pool_max_idle_per_host(connections)
                    .pool_idle_timeout(Duration::from_secs(50))
                    .redirect(reqwest::redirect::Policy::none())
                    // The SDK's own client ignores proxy variables; so does this.
                    .no_proxy()
                    .tcp_nodelay(true)
                    .build()
                    .map_err(|e| format!("cannot build the HTTPS client: {}", error_chain(&e)))?,
            ),
            None => {
                return Err(format!(
                    "SQS endpoint {endpoint:?} is neither http nor https"
                ))
            }
        };
        Ok(SqsJson {
            endpoint: parsed.to_string(),
            path,
            transport,
            credentials: CredentialCache::new(credentials),
            region: region.to_string(),
            skew_s: AtomicI64::new(0),
        })
    }

    /// One receive of up to `max` messages with every attribute, and the
    /// time on SQS's clock when it answered.
    pub async fn receive(
        &self,
        queue_url: &str,
        max: usize,
        wait_s: u32,
        visibility_s: Option<u32>,
    ) -> Result<Received, SqsError> {
        let input = ReceiveInput {
            queue_url,
            max_number_of_messages: max,
            wait_time_seconds: wait_s,
            visibility_timeout: visibility_s,
            attribute_names: ALL,
            message_system_attribute_names: ALL,
            message_attribute_names: ALL,
        };
        let answer = self.call(Action::Receive, &input, RECEIVE_TIMEOUT).await?;
        let output: ReceiveOutput = parse(&answer.body)?;
        Ok(Received {
            messages: output.messages.unwrap_or_default(),
            sqs_date_ms: answer.date_ms,
        })
    }

    /// One DeleteMessageBatch or ChangeMessageVisibilityBatch; the entries
    /// SQS refused.
    pub async fn batch(
        &self,
        action: Action,
        queue_url: &str,
        entries: &[BatchEntry<'_>],
    ) -> Result<Vec<BatchFailure>, SqsError> {
        let input = BatchInput { queue_url, entries };
        let answer = self.call(action, &input, BATCH_TIMEOUT).await?;
        let output: BatchOutput = parse(&answer.body)?;
        Ok(output.failures(entries))
    }

    /// Serializes, signs and sends one call, all within `timeout`; a 200
    /// answer.
    async fn call(
        &self,
        action: Action,
        input: &impl Serialize,
        timeout: Duration,
    ) -> Result<Answer, SqsError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let body = serde_json::to_vec(input)
            .map_err(|e| SqsError::new(format!("cannot encode {}: {e}", action.name()), true))?;
        let credentials = self.credentials.get(deadline).await?;
        let signed = self.signed_headers(action, &credentials, &body)?;
        let exchange = async {
            match &self.transport {
                Transport::Plain(pool) => {
                    let mut request = http::Request::new(Full::new(Bytes::from(body)));
                    *request.method_mut() = Method::POST;
                    *request.uri_mut() = self.path.clone();
                    *request.headers_mut() = signed;
                    pool.send(request, MAX_ANSWER_BYTES)
                        .await
                        .map(|(head, body)| (head.status, head.headers, body))
                }
                Transport::Tls(client) => {
                    let response = client
                        .post(&self.endpoint)
                        .headers(signed)
                        .body(body)
                        .send()
                        .await
                        .map_err(|e| Failure::Other(error_chain(&e)))?;
                    let (status, headers) = (response.status(), response.headers().clone());
                    let body = read_capped(response, MAX_ANSWER_BYTES).await?;
                    Ok((status, headers, body))
                }
            }
        };
        let (status, headers, body) = match tokio::time::timeout_at(deadline, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                return Err(SqsError::transient(format!(
                    "{} failed: {e}",
                    action.name()
                )))
            }
            Err(_) => {
                return Err(SqsError::transient(format!(
                    "{} got no answer within {timeout:?}",
                    action.name()
                )))
            }
        };
        self.note_clock(&headers);
        if status.is_success() {
            return Ok(Answer {
                body,
                date_ms: date_ms(&headers),
            });
        }
        let mut error = service_error(status.as_u16(), &headers, &body);
        if error.refuses_credentials() {
            // Expired or revoked: the next call signs with fresh ones.
            let renewable = self.credentials.refused(&credentials);
            error.permanent = !renewable;
            if renewable {
                error.message.push_str(" (fetching new credentials)");
            }
        }
        Err(error)
    }

    /// Learns the endpoint's clock from an answer's `Date`. Every call
    /// refused for a signature made before this correction is transient (see
    /// `error::Sqs`), so its retry is signed with the corrected time.
    fn note_clock(&self, headers: &http::HeaderMap) {
        let Some(date) = headers.get(DATE).and_then(|d| d.to_str().ok()) else {
            return;
        };
        let Some(skew) = clock_skew(date, SystemTime::now()) else {
            return;
        };
        let before = self.skew_s.swap(skew, Ordering::Relaxed);
        if skew != before && skew != 0 {
            tracing::warn!(
                skew_s = skew,
                "this machine's clock is off from SQS's; signing with SQS's time"
            );
        }
    }

    /// The request's headers, with the SigV4 signature added.
    fn signed_headers(
        &self,
        action: Action,
        credentials: &Credentials,
        body: &[u8],
    ) -> Result<http::HeaderMap, SqsError> {
        let mut headers = http::HeaderMap::with_capacity(8);
        headers.insert(CONTENT_TYPE, JSON_1_0);
        headers.insert(HeaderName::from_static("x-amz-target"), action.target());
        headers.insert(USER_AGENT, HeaderValue::from_static(OUR_AGENT));
        let cannot_sign = |e: &dyn std::fmt::Display| {
            SqsError::transient(format!("cannot sign {}: {e}", action.name()))
        };
        let identity: Identity = credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("sqs")
            .time(shifted(
                SystemTime::now(),
                self.skew_s.load(Ordering::Relaxed),
            ))
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| cannot_sign(&e))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            self.endpoint.as_str(),
            headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
            SignableBody::Bytes(body),
        )
        .map_err(|e| cannot_sign(&e))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| cannot_sign(&e))?
            .into_parts();
        let (added, _) = instructions.into_parts();
        for header in added {
            let value = HeaderValue::from_str(header.value()).map_err(|e| cannot_sign(&e))?;
            let name = HeaderName::from_static(header.name());
            headers.insert(name, value);
        }
        Ok(headers)
    }
}

/// How far ahead of `now` the clock that wrote the HTTP `date` is, in
/// seconds; 0 when the difference is too small to matter.
fn clock_skew(date: &str, now: SystemTime) -> Option<i64> {
    let theirs = httpdate::parse_http_date(date).ok()?;
    let skew = match theirs.duration_since(now) {
        Ok(ahead) => ahead.as_secs() as i64,
        Err(behind) => -(behind.duration().as_secs() as i64),
    };
    Some(if skew.abs() >= SKEW_THRESHOLD_S {
        skew
    } else {
        0
    })
}

fn shifted(t: SystemTime, skew_s: i64) -> SystemTime {
    let by = Duration::from_secs(skew_s.unsigned_abs());
    if skew_s >= 0 {
        t + by
    } else {
        t - by
    }
}

/// The answer's `Date` (SQS's clock, to the second) in epoch milliseconds.
fn date_ms(headers: &http::HeaderMap) -> Option<i64> {
    let date = headers.get(DATE)?.to_str().ok()?;
    let at = httpdate::parse_http_date(date).ok()?;
    let ms = at.duration_since(UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(ms).ok()
}

/// A reqwest answer's body, failing past `max` bytes.
async fn read_capped(mut response: reqwest::Response, max: usize) -> Result<Bytes, Failure> {
    let too_large = || Failure::Other(format!("answer larger than {max} bytes"));
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Failure::Other(error_chain(&e)))?
    {
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, SqsError> {
    serde_json::from_slice(body)
        .map_err(|e| SqsError::transient(format!("unreadable answer from SQS: {e}")))
}

/// An error answer, classified as the SDK classifies it: the code comes from
/// `x-amzn-query-error` (SQS's query-compatible code) or the body's `__type`;
/// throttling and server faults are worth retrying, the rest are not.
pub fn service_error(status: u16, headers: &http::HeaderMap, body: &[u8]) -> SqsError {
    #[derive(Deserialize, Default)]
    struct ErrorBody {
        #[serde(rename = "__type")]
        kind: Option<String>,
        #[serde(alias = "Message")]
        message: Option<String>,
    }
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let from_header = headers
        .get("x-amzn-query-error")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .filter(|c| !c.is_empty());
    let from_type = parsed.kind.as_deref().map(|t| {
        let t = t.rsplit('#').next().unwrap_or(t);
        t.split(':').next().unwrap_or(t)
    });
    let code = from_header.or(from_type);
    let message = match (code, &parsed.message) {
        (Some(code), Some(m)) => format!("{code}: {m}"),
        (Some(code), None) => format!("{code}: no message"),
        (None, _) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
            format!("SQS answered HTTP {status}: {}", text.trim())
        }
    };
    let mut error = SqsError::new(message, Sqs::permanent(code, status));
    error.code = code.map(str::to_string);
    error
}

const ALL: &[&str] = &["All"];

/// A 200 answer.
struct Answer {
    body: Bytes,
    /// Its `Date`, in epoch milliseconds.
    date_ms: Option<i64>,
}

/// What one receive brought.
#[derive(Default)]
pub struct Received {
    pub messages: Vec<WireMessage>,
    /// When SQS answered, on SQS's clock (its `Date`, to the second), in
    /// epoch milliseconds: message timestamps are on that clock too.
    pub sqs_date_ms: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiveInput<'a> {
    queue_url: &'a str,
    max_number_of_messages: usize,
    wait_time_seconds: u32,
    /// Left out to keep the queue's own visibility timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    visibility_timeout: Option<u32>,
    /// Older servers know only this name for the system attributes.
    attribute_names: &'a [&'a str],
    message_system_attribute_names: &'a [&'a str],
    message_attribute_names: &'a [&'a str],
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiveOutput {
    messages: Option<Vec<WireMessage>>,
}

/// A received message as SQS sends it.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct WireMessage {
    pub message_id: Option<String>,
    pub receipt_handle: Option<String>,
    pub body: Option<String>,
    pub attributes: Option<SystemAttributes>,
    pub message_attributes: Option<std::collections::HashMap<String, WireAttribute>>,
}

/// The system attributes the daemon uses; others are ignored.
#[derive(Deserialize, Default)]
pub struct SystemAttributes {
    #[serde(rename = "SentTimestamp")]
    pub sent_timestamp: Option<String>,
    #[serde(rename = "ApproximateFirstReceiveTimestamp")]
    pub first_receive_timestamp: Option<String>,
    #[serde(rename = "ApproximateReceiveCount")]
    pub receive_count: Option<String>,
    #[serde(rename = "SenderId")]
    pub sender_id: Option<String>,
    #[serde(rename = "AWSTraceHeader")]
    pub trace_header: Option<String>,
    #[serde(rename = "MessageGroupId")]
    pub group_id: Option<String>,
}

/// A message attribute as SQS gave it: its type (custom ones like
/// `Number.int` included) and its value, a string or base64 binary. Kept
/// whole for dead-letter copies; only String and Number ones become headers.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct WireAttribute {
    pub data_type: String,
    pub string_value: Option<String>,
    /// Base64, as the JSON protocol carries it.
    pub binary_value: Option<String>,
}

/// One entry of a delete or visibility batch.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchEntry<'a> {
    pub id: String,
    pub receipt_handle: &'a str,
    /// Visibility batches only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visibility_timeout: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct BatchInput<'a> {
    queue_url: &'a str,
    entries: &'a [BatchEntry<'a>],
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchOutput {
    failed: Option<Vec<BatchFailure>>,
    successful: Option<Vec<BatchSuccess>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchSuccess {
    id: String,
}

impl BatchOutput {
    /// The entries SQS refused, and those it listed neither as successful
    /// nor as failed: nothing says those were done, so they count as
    /// failed for a reason that may pass (and are tried again).
    fn failures(self, entries: &[BatchEntry<'_>]) -> Vec<BatchFailure> {
        let mut failed = self.failed.unwrap_or_default();
        let successful = self.successful.unwrap_or_default();
        for entry in entries {
            let listed = successful.iter().any(|s| s.id == entry.id)
                || failed.iter().any(|f| f.id == entry.id);
            if !listed {
                failed.push(BatchFailure {
                    id: entry.id.clone(),
                    sender_fault: false,
                    code: "NotInAnswer".into(),
                    message: Some(
                        "SQS listed the entry neither as successful nor as failed".into(),
                    ),
                });
            }
        }
        failed
    }
}

/// An entry of a batch that SQS refused.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchFailure {
    pub id: String,
    #[serde(default)]
    pub sender_fault: bool,
    #[serde(default)]
    pub code: String,
    pub message: Option<String>,
}

/// The endpoint the SDK sends to, read from its first request, so that the
/// hot-path calls go exactly where the SDK's resolution (options,
/// `AWS_ENDPOINT_URL_SQS`, profile, region, FIPS, dual-stack) points.
#[derive(Clone, Debug, Default)]
pub struct EndpointProbe {
    seen: Arc<Mutex<Option<String>>>,
}

impl EndpointProbe {
    /// The endpoint of the last request seen, without its query.
    pub fn endpoint(&self) -> Option<String> {
        self.seen.lock().ok()?.clone()
    }
}

impl aws_sdk_sqs::config::Intercept for EndpointProbe {
    fn name(&self) -> &'static str {
        "sqsd-endpoint-probe"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_sqs::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_sqs::config::RuntimeComponents,
        _cfg: &mut aws_sdk_sqs::config::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let uri = context.request().uri();
        let endpoint = uri.split('?').next().unwrap_or(uri).to_string();
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(endpoint);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn error_code_prefers_the_query_compatible_header() {
        let body = br#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"gone"}"#;
        let h = headers(&[(
            "x-amzn-query-error",
            "AWS.SimpleQueueService.NonExistentQueue;Sender",
        )]);
        let e = service_error(400, &h, body);
        assert_eq!(e.message, "AWS.SimpleQueueService.NonExistentQueue: gone");
        assert!(e.permanent);
        let e = service_error(400, &http::HeaderMap::new(), body);
        assert_eq!(e.message, "QueueDoesNotExist: gone");
        assert!(e.permanent);
    }

    #[test]
    fn throttling_and_server_faults_are_retried() {
        let throttled = br#"{"__type":"com.amazonaws.sqs#RequestThrottled","Message":"slow down"}"#;
        let e = service_error(400, &http::HeaderMap::new(), throttled);
        assert_eq!(e.message, "RequestThrottled: slow down");
        assert!(!e.permanent);
        let e = service_error(
            400,
            &http::HeaderMap::new(),
            br#"{"__type":"ThrottlingException:http://internal.amazon.com/"}"#,
        );
        assert_eq!(e.message, "ThrottlingException: no message");
        assert!(!e.permanent);
        let e = service_error(
            503,
            &http::HeaderMap::new(),
            b"<html>Service Unavailable</html>",
        );
        assert_eq!(
            e.message,
            "SQS answered HTTP 503: <html>Service Unavailable</html>"
        );
        assert!(!e.permanent);
        assert!(!service_error(429, &http::HeaderMap::new(), b"").permanent);
        assert!(service_error(403, &http::HeaderMap::new(), b"denied").permanent);
    }

    #[test]
    fn receive_request_asks_for_every_attribute() {
        let input = ReceiveInput {
            queue_url: "http://q/1/a",
            max_number_of_messages: 10,
            wait_time_seconds: 20,
            visibility_timeout: Some(30),
            attribute_names: ALL,
            message_system_attribute_names: ALL,
            message_attribute_names: ALL,
        };
        let json: serde_json::Value = serde_json::to_value(&input).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "QueueUrl": "http://q/1/a", "MaxNumberOfMessages": 10,
                "WaitTimeSeconds": 20, "VisibilityTimeout": 30,
                "AttributeNames": ["All"], "MessageSystemAttributeNames": ["All"],
                "MessageAttributeNames": ["All"]
            })
        );
    }

    #[test]
    fn batch_entries_carry_visibility_only_when_changing_it() {
        let entries = [
            BatchEntry {
                id: "0".into(),
                receipt_handle: "r0",
                visibility_timeout: None,
            },
            BatchEntry {
                id: "1".into(),
                receipt_handle: "r1",
                visibility_timeout: Some(0),
            },
        ];
        let json = serde_json::to_value(BatchInput {
            queue_url: "u",
            entries: &entries,
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"QueueUrl": "u", "Entries": [
                {"Id": "0", "ReceiptHandle": "r0"},
                {"Id": "1", "ReceiptHandle": "r1", "VisibilityTimeout": 0}
            ]})
        );
        let out: BatchOutput = serde_json::from_str(
            r#"{"Successful":[{"Id":"0"}],"Failed":[{"Id":"1","SenderFault":true,"Code":"ReceiptHandleIsInvalid","Message":"bad"}]}"#,
        )
        .unwrap();
        let failed = out.failed.unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(
            (
                failed[0].id.as_str(),
                failed[0].sender_fault,
                failed[0].code.as_str()
            ),
            ("1", true, "ReceiptHandleIsInvalid")
        );
    }

    #[test]
    fn entries_missing_from_a_batch_answer_count_as_failed_for_now() {
        let entries: Vec<BatchEntry<'_>> = (0..3)
            .map(|i| BatchEntry {
                id: i.to_string(),
                receipt_handle: "r",
                visibility_timeout: None,
            })
            .collect();
        let failures = |json: &str| -> Vec<(String, bool)> {
            let out: BatchOutput = serde_json::from_str(json).unwrap();
            let mut f: Vec<(String, bool)> = out
                .failures(&entries)
                .into_iter()
                .map(|f| (f.id, f.sender_fault))
                .collect();
            f.sort();
            f
        };
        assert_eq!(
            failures(r#"{"Successful":[{"Id":"0"},{"Id":"1"},{"Id":"2"}]}"#),
            vec![]
        );
        assert_eq!(
            failures(
                r#"{"Successful":[{"Id":"0"}],"Failed":[{"Id":"1","SenderFault":true,"Code":"X"}]}"#
            ),
            vec![("1".to_string(), true), ("2".to_string(), false)]
        );
        assert_eq!(
            failures("{}"),
            vec![
                ("0".to_string(), false),
                ("1".to_string(), false),
                ("2".to_string(), false)
            ]
        );
    }

    #[test]
    fn receive_answers_are_read_with_or_without_messages() {
        let body = r#"{"Messages":[{"MessageId":"m1","ReceiptHandle":"rh","MD5OfBody":"x",
            "Body":"b","Attributes":{"ApproximateReceiveCount":"2","SequenceNumber":"9"},
            "MessageAttributes":{"bin":{"DataType":"Binary","BinaryValue":"AAE="}}}]}"#;
        let out: ReceiveOutput = serde_json::from_str(body).unwrap();
        let m = out.messages.unwrap().pop().unwrap();
        assert_eq!(m.message_id.as_deref(), Some("m1"));
        assert_eq!(m.receipt_handle.as_deref(), Some("rh"));
        assert_eq!(m.attributes.unwrap().receive_count.as_deref(), Some("2"));
        assert_eq!(m.message_attributes.unwrap()["bin"].string_value, None);
        let empty: ReceiveOutput = serde_json::from_str("{}").unwrap();
        assert!(empty.messages.is_none());
    }

    #[test]
    fn clock_skew_counts_only_when_it_would_spoil_signatures() {
        let now = httpdate::parse_http_date("Sun, 22 Nov 2026 08:00:00 GMT").unwrap();
        let skew = |d: &str| clock_skew(d, now);
        assert_eq!(skew("Sun, 22 Nov 2026 08:00:59 GMT"), Some(0));
        assert_eq!(skew("Sun, 22 Nov 2026 07:56:01 GMT"), Some(0));
        assert_eq!(skew("Sun, 22 Nov 2026 08:10:00 GMT"), Some(600));
        assert_eq!(skew("Sun, 22 Nov 2026 07:00:00 GMT"), Some(-3600));
        assert_eq!(skew("yesterday"), None);
        assert_eq!(shifted(now, -3600), now - Duration::from_secs(3600));
        assert_eq!(shifted(now, 600), now + Duration::from_secs(600));
    }

    /// An SQS stand-in on loopback: answers call `n` (from 0) with
    /// `script(n)`: status, extra headers, body; records every request head.
    struct Stub {
        url: String,
        heads: Arc<Mutex<Vec<http::HeaderMap>>>,
        _stop: tokio_util::sync::DropGuard,
    }

    type Script = dyn Fn(usize) -> (u16, Vec<(&'static str, String)>, String) + Send + Sync;

    impl Stub {
        async fn start(barrier: usize, script: Arc<Script>) -> Stub {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/", listener.local_addr().unwrap());
            let heads: Arc<Mutex<Vec<http::HeaderMap>>> = Arc::default();
            // Holds the first `barrier` requests until they all arrived.
            let together = Arc::new(tokio::sync::Barrier::new(barrier.max(1)));
            let stop = tokio_util::sync::CancellationToken::new();
            let recorded = heads.clone();
            let handler = move |request: http::Request<hyper::body::Incoming>| {
                let n = {
                    let mut heads = recorded.lock().unwrap();
                    heads.push(request.headers().clone());
                    heads.len() - 1
                };
                let (status, headers, body) = script(n);
                let together = together.clone();
                async move {
                    if n < barrier {
                        together.wait().await;
                    }
                    let mut answer = http::Response::new(Full::new(Bytes::from(body)));
                    *answer.status_mut() = http::StatusCode::from_u16(status).unwrap();
                    for (k, v) in headers {
                        answer
                            .headers_mut()
                            .insert(k, HeaderValue::from_str(&v).unwrap());
                    }
                    answer
                }
            };
            let limits = crate::http1::Limits {
                head_timeout: Duration::from_secs(5),
                request_timeout: Duration::from_secs(10),
                max_connections: 16,
            };
            let serving = crate::http1::serve("stub", listener, limits, stop.clone(), handler);
            tokio::spawn(serving);
            Stub {
                url,
                heads,
                _stop: stop.drop_guard(),
            }
        }

        fn head(&self, n: usize) -> http::HeaderMap {
            self.heads.lock().unwrap()[n].clone()
        }
    }

    fn refusal(code: &str) -> (u16, Vec<(&'static str, String)>, String) {
        let body = format!(r#"{{"__type":"com.amazonaws.sqs#{code}","message":"refused"}}"#);
        let header = ("x-amzn-query-error", format!("{code};Sender"));
        (403, vec![header], body)
    }

    fn ok(body: &str) -> (u16, Vec<(&'static str, String)>, String) {
        (200, vec![], body.to_string())
    }

    fn provider(
        lifetime: Option<Duration>,
    ) -> (
        SharedCredentialsProvider,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let p = super::super::credentials::testing::Counting {
            calls: calls.clone(),
            lifetime,
            same: false,
        };
        (SharedCredentialsProvider::new(p), calls)
    }

    fn access_key(head: &http::HeaderMap) -> String {
        let auth = head["authorization"].to_str().unwrap();
        let credential = auth.split("Credential=").nth(1).unwrap();
        credential.split('/').next().unwrap().to_string()
    }

    async fn delete_one(client: &SqsJson) -> Result<Vec<BatchFailure>, SqsError> {
        let entries = [BatchEntry {
            id: "0".into(),
            receipt_handle: "rh",
            visibility_timeout: None,
        }];
        client
            .batch(Action::DeleteBatch, "http://q/1/a", &entries)
            .await
    }

    #[tokio::test]
    async fn expired_credentials_are_dropped_and_the_next_call_signs_with_new_ones() {
        for code in [
            "ExpiredToken",
            "ExpiredTokenException",
            "InvalidClientTokenId",
        ] {
            let stub = Stub::start(
                0,
                Arc::new(|n| if n == 1 { refusal(code) } else { ok("{}") }),
            )
            .await;
            let (creds, fetches) = provider(Some(Duration::from_secs(3600)));
            let client = SqsJson::new(&stub.url, "us-east-1", Some(creds), 4).unwrap();
            delete_one(&client).await.unwrap();
            let e = delete_one(&client).await.unwrap_err();
            assert!(!e.permanent, "{code}: new credentials may pass: {e}");
            assert!(e.message.contains(code), "{e}");
            delete_one(&client).await.unwrap();
            assert_eq!(fetches.load(Ordering::SeqCst), 2, "{code}: fetched anew");
            assert_eq!(access_key(&stub.head(1)), "AK0");
            assert_eq!(access_key(&stub.head(2)), "AK1");
        }
    }

    #[tokio::test]
    async fn every_call_refused_before_the_clock_was_corrected_may_be_retried() {
        // SQS's clock 15 minutes ahead: three calls signed with this
        // machine's time are refused together; each may be retried, and the
        // retry is signed with SQS's time.
        let ahead = Duration::from_secs(900);
        let stub = Stub::start(
            3,
            Arc::new(move |n| {
                let date = httpdate::fmt_http_date(SystemTime::now() + ahead);
                let (status, mut headers, body) = if n < 3 {
                    refusal("SignatureDoesNotMatch")
                } else {
                    ok("{}")
                };
                headers.push(("date", date));
                (status, headers, body)
            }),
        )
        .await;
        let (creds, _) = provider(None);
        let client = SqsJson::new(&stub.url, "us-east-1", Some(creds), 4).unwrap();
        let (a, b, c) = tokio::join!(
            delete_one(&client),
            delete_one(&client),
            delete_one(&client)
        );
        for refused in [a, b, c] {
            let e = refused.unwrap_err();
            assert!(!e.permanent, "{e}");
        }
        delete_one(&client).await.unwrap();
        let signed_at = stub.head(3)["x-amz-date"].to_str().unwrap().to_string();
        let signed_at = chrono::NaiveDateTime::parse_from_str(&signed_at, "%Y%m%dT%H%M%SZ")
            .unwrap()
            .and_utc()
            .timestamp();
        let sqs_now = (SystemTime::now() + ahead)
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((signed_at - sqs_now).abs() < 60, "signed with SQS's time");
    }

    #[tokio::test]
    async fn a_receive_gives_the_time_on_sqs_clock() {
        let stub = Stub::start(
            0,
            Arc::new(|_| {
                let date = ("date", "Sun, 22 Nov 2026 08:00:00 GMT".to_string());
                (
                    200,
                    vec![date],
                    r#"{"Messages":[{"MessageId":"m1"}]}"#.into(),
                )
            }),
        )
        .await;
        let (creds, _) = provider(None);
        let client = SqsJson::new(&stub.url, "us-east-1", Some(creds), 4).unwrap();
        let received = client
            .receive("http://q/1/a", 10, 0, Some(30))
            .await
            .unwrap();
        assert_eq!(received.messages.len(), 1);
        let expected = httpdate::parse_http_date("Sun, 22 Nov 2026 08:00:00 GMT").unwrap();
        let expected = expected.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        assert_eq!(received.sqs_date_ms, Some(expected));
    }

    #[tokio::test]
    async fn an_answer_past_the_cap_fails_the_call() {
        let stub = Stub::start(
            0,
            Arc::new(|_| {
                let filler = "x".repeat(MAX_ANSWER_BYTES);
                ok(&format!(r#"{{"Messages":[],"Filler":"{filler}"}}"#))
            }),
        )
        .await;
        let (creds, _) = provider(None);
        let client = SqsJson::new(&stub.url, "us-east-1", Some(creds), 4).unwrap();
        let Err(e) = client.receive("http://q/1/a", 10, 0, Some(30)).await else {
            panic!("an answer past the cap was read");
        };
        assert!(!e.permanent);
        assert!(e.message.contains("larger than 16777216 bytes"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_credential_provider_fails_the_call_in_bounded_time() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let hanging = super::super::credentials::testing::Hanging(calls);
        let provider = SharedCredentialsProvider::new(hanging);
        // Nothing listens there: the call must fail before connecting.
        let client = SqsJson::new("http://127.0.0.1:9/", "us-east-1", Some(provider), 4).unwrap();
        let started = tokio::time::Instant::now();
        let e = delete_one(&client).await.unwrap_err();
        assert!(!e.permanent);
        assert!(
            e.message.contains("credential provider gave no answer"),
            "{e}"
        );
        let waited = started.elapsed();
        assert!(waited >= super::super::credentials::FETCH_TIMEOUT && waited < BATCH_TIMEOUT);
    }

    #[test]
    fn signature_covers_target_and_date() {
        let client = SqsJson::new("http://127.0.0.1:9324/", "eu-west-1", None, 4).unwrap();
        let creds = Credentials::new("AKID", "secret", Some("tok".into()), None, "t");
        let h = client
            .signed_headers(Action::Receive, &creds, b"{}")
            .unwrap();
        let auth = h["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKID/"),
            "{auth}"
        );
        assert!(auth.contains("/eu-west-1/sqs/aws4_request"), "{auth}");
        assert!(
            auth.contains("content-type;host;x-amz-date;x-amz-security-token;x-amz-target"),
            "{auth}"
        );
        assert_eq!(h["x-amz-security-token"], "tok");
        assert_eq!(h["x-amz-target"], "AmazonSQS.ReceiveMessage");
        assert!(h.contains_key("x-amz-date"));
    }
}
