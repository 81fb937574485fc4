//! Turning a received SQS message into the HTTP request the application sees:
//! the path, the body and every `X-Aws-Sqsd-*` header, exactly as Elastic
//! Beanstalk's daemon sends them.
//!
//! Nothing from the queue is trusted: a per-message path can only ever be a
//! path on the configured application, and attribute names or values that
//! are not valid in a header are dropped (and reported), never passed on.
//! The same goes for what an SNS envelope carries (`sns_unwrap`, [`sns`]).
//! The finished POST is signed over the body actually sent
//! (`app::signing`).

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Datelike, NaiveDateTime, Timelike, Utc};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::settle::Key;
use super::sns::{self, Unwrapped};
use crate::app::request::{check_path, header_value, PathError, Request};
use crate::app::signing::{self, Signer, SIGNATURE_HEADER};
use crate::aws::sqs_json::{WireAttribute, WireMessage};
use crate::cron::format::{PATH_ATTR, SCHEDULED_TIME_ATTR, TASK_BODY, TASK_NAME_ATTR};

/// `User-Agent` of every POST; applications match on the `aws-sqsd/` prefix.
pub const USER_AGENT: &str = concat!("aws-sqsd/3.0 (sqsd ", env!("CARGO_PKG_VERSION"), ")");

/// A received message, in the daemon's own terms.
#[derive(Clone, Debug, Default)]
pub struct Incoming {
    pub id: String,
    pub receipt_handle: String,
    pub body: String,
    /// Milliseconds since the epoch, as SQS reports them.
    pub sent_at_ms: Option<i64>,
    pub first_received_at_ms: Option<i64>,
    pub receive_count: Option<u32>,
    pub sender_id: Option<String>,
    pub trace_header: Option<String>,
    /// FIFO queues: the message group, whose order must be kept.
    pub group_id: Option<String>,
    /// String and Number attributes, sorted by name; Binary ones are left out.
    pub attributes: Vec<(String, String)>,
    /// Every message attribute as received (Binary and custom types too),
    /// sorted by name: what a dead-letter copy carries.
    pub message_attributes: Vec<(String, WireAttribute)>,
    /// The settler's handle on this message, once it holds it.
    pub key: Key,
    /// When the receive that brought it answered, on this machine's
    /// monotonic clock and on SQS's (the answer's `Date`), for measuring the
    /// message's age on SQS's clock.
    pub received: Option<tokio::time::Instant>,
    pub sqs_received_ms: Option<i64>,
}

impl From<WireMessage> for Incoming {
    fn from(m: WireMessage) -> Self {
        let sys = m.attributes.unwrap_or_default();
        let millis = |v: Option<String>| v.and_then(|s| s.parse::<i64>().ok());
        let mut message_attributes: Vec<(String, WireAttribute)> = m
            .message_attributes
            .unwrap_or_default()
            .into_iter()
            .collect();
        message_attributes.sort_by(|a, b| a.0.cmp(&b.0));
        let attributes: Vec<(String, String)> = message_attributes
            .iter()
            .filter(|(_, v)| {
                let t = v.data_type.as_str();
                t.starts_with("String") || t.starts_with("Number")
            })
            .filter_map(|(k, v)| v.string_value.clone().map(|s| (k.clone(), s)))
            .collect();
        Incoming {
            id: m.message_id.unwrap_or_default(),
            receipt_handle: m.receipt_handle.unwrap_or_default(),
            body: m.body.unwrap_or_default(),
            sent_at_ms: millis(sys.sent_timestamp),
            first_received_at_ms: millis(sys.first_receive_timestamp),
            receive_count: sys.receive_count.and_then(|s| s.parse::<u32>().ok()),
            sender_id: sys.sender_id,
            trace_header: sys.trace_header,
            group_id: sys.group_id,
            attributes,
            message_attributes,
            ..Incoming::default()
        }
    }
}

impl Incoming {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The task's name, when this message is a periodic task in Elastic
    /// Beanstalk's format: the task attribute **and** the task body. Any
    /// other message carrying the attribute is delivered as it is.
    pub fn task_name(&self) -> Option<&str> {
        self.attribute(TASK_NAME_ATTR)
            .filter(|_| self.body == TASK_BODY)
    }
}

/// Why an attribute was not sent as a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// The attribute name is not a valid header-name token.
    BadName,
    /// The value holds control characters (CR, LF, NUL, ...).
    BadValue,
    /// Another attribute with the same name but for case was sent.
    DuplicateName,
}

impl Dropped {
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::BadName => "bad_name",
            Dropped::BadValue => "bad_value",
            Dropped::DuplicateName => "duplicate_name",
        }
    }
}

/// A message's POST, with the attributes left out of it.
#[derive(Debug)]
pub struct Post {
    pub request: Request,
    /// Attributes left out, with the reason, for counting and logging.
    pub dropped: Vec<(String, Dropped)>,
    /// With `sns_unwrap`: why a body that claims to be an SNS notification
    /// was sent as it is (it never quotes the body).
    pub malformed_envelope: Option<String>,
}

/// Fixed parts of every request, prepared once.
#[derive(Clone, Debug)]
pub struct Template {
    /// Application base URL, parsed once; `None` if it does not parse.
    base: Option<reqwest::Url>,
    /// The base URL's own path without trailing slash (`""` or `/api`).
    base_path: String,
    pub default_path: String,
    /// URL and target for messages without a path of their own, made once.
    default_url: Option<(reqwest::Url, PathAndQuery)>,
    pub content_type: HeaderValue,
    pub queue_name: HeaderValue,
    /// Signs every POST when it holds keys.
    signer: Option<Arc<Signer>>,
    /// `Bearer <token>`, marked sensitive.
    authorization: Option<HeaderValue>,
    /// POST the `Message` of SNS notification envelopes.
    sns_unwrap: bool,
}

impl Template {
    pub fn new(worker_url: &str, default_path: &str, mime_type: &str, queue_name: &str) -> Self {
        let base = reqwest::Url::parse(worker_url).ok();
        let base_path = base
            .as_ref()
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default();
        let mut template = Template {
            base,
            base_path,
            default_path: default_path.to_string(),
            default_url: None,
            content_type: HeaderValue::from_str(mime_type)
                .unwrap_or(HeaderValue::from_static("application/json")),
            queue_name: header_value(queue_name).unwrap_or(HeaderValue::from_static("")),
            signer: None,
            authorization: None,
            sns_unwrap: false,
        };
        template.default_url = check_path(default_path)
            .ok()
            .and_then(|p| template.url_for(p).ok());
        template
    }

    /// Signs every POST with the keys `signer` holds at the time.
    pub fn signed_by(mut self, signer: Arc<Signer>) -> Self {
        self.signer = Some(signer);
        self
    }

    /// Sends `Authorization: Bearer <token>` with every POST.
    pub fn with_token(mut self, token: Option<&str>) -> Self {
        self.authorization = token.and_then(signing::bearer);
        self
    }

    /// POSTs the `Message` of SNS notification envelopes.
    pub fn unwrapping_sns(mut self, on: bool) -> Self {
        self.sns_unwrap = on;
        self
    }

    /// The application URL for `path` (already checked), and its target.
    /// Only the path and query of the parsed base change: scheme, host and
    /// port cannot, whatever a message says.
    fn url_for(&self, path: &str) -> Result<(reqwest::Url, PathAndQuery), PathError> {
        let mut url = self.base.clone().ok_or(PathError::OtherOrigin)?;
        let (path_part, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        url.set_path(&format!("{}{path_part}", self.base_path));
        url.set_query(query);
        // Whatever the URL parser made of the path, it must still be below
        // the application's base path.
        let below_base = url
            .path()
            .strip_prefix(self.base_path.as_str())
            .is_some_and(|rest| rest.starts_with('/'));
        if !below_base {
            return Err(PathError::OtherOrigin);
        }
        let target = match url.query() {
            Some(q) => PathAndQuery::try_from(format!("{}?{q}", url.path())),
            None => PathAndQuery::try_from(url.path()),
        }
        .map_err(|_| PathError::BadCharacter)?;
        Ok((url, target))
    }

    /// Builds the POST for a message, made at `now_s` (unix seconds, for
    /// the signature), or says why its path is refused.
    pub fn request(&self, m: &Incoming, now_s: i64) -> Result<Post, PathError> {
        let path_attr = m.attribute(PATH_ATTR);
        let (url, target) = match (path_attr, &self.default_url) {
            (None, Some(default)) => default.clone(),
            _ => self.url_for(check_path(path_attr.unwrap_or(&self.default_path))?)?,
        };

        let mut headers = HeaderMap::with_capacity(16 + m.attributes.len());
        let mut add = |name: &'static str, value: HeaderValue| {
            headers.append(HeaderName::from_static(name), value);
        };
        add("user-agent", HeaderValue::from_static(USER_AGENT));
        add("content-type", self.content_type.clone());
        let msgid = text_or_empty(&m.id);
        add("x-aws-sqsd-msgid", msgid.clone());
        add("x-aws-sqsd-queue", self.queue_name.clone());
        add(
            "x-aws-sqsd-first-received-at",
            timestamp(m.first_received_at_ms),
        );
        add("x-aws-sqsd-sent-at", timestamp(m.sent_at_ms));
        let count = m.receive_count.map(|c| c.to_string()).unwrap_or_default();
        add("x-aws-sqsd-receive-count", text_or_empty(&count));
        add(
            "x-aws-sqsd-sender-id",
            text_or_empty(m.sender_id.as_deref().unwrap_or("")),
        );
        add("x-aws-sqsd-path", text_or_empty(path_attr.unwrap_or("")));
        if let Some(trace) = m.trace_header.as_deref().and_then(header_value) {
            add("x-amzn-trace-id", trace);
        }
        if let Some(authorization) = &self.authorization {
            add("authorization", authorization.clone());
        }

        let mut dropped = Vec::new();
        let task = m.task_name();
        if let Some(name) = task {
            match header_value(name) {
                Some(v) => add("x-aws-sqsd-taskname", v),
                None => dropped.push((TASK_NAME_ATTR.to_string(), Dropped::BadValue)),
            }
            let scheduled = m.attribute(SCHEDULED_TIME_ATTR).unwrap_or("");
            match header_value(&scheduled_at(scheduled)) {
                Some(v) => add("x-aws-sqsd-scheduled-at", v),
                None => dropped.push((SCHEDULED_TIME_ATTR.to_string(), Dropped::BadValue)),
            }
        }
        let mut attributes = Attributes {
            headers: &mut headers,
            sent: HashSet::new(),
            dropped: &mut dropped,
        };
        attributes.add(&m.attributes);

        let mut malformed_envelope = None;
        let body = if task.is_some() {
            Bytes::new()
        } else if !self.sns_unwrap {
            Bytes::from(m.body.clone())
        } else {
            match sns::unwrap(&m.body) {
                Unwrapped::NotEnvelope => Bytes::from(m.body.clone()),
                Unwrapped::Malformed(why) => {
                    malformed_envelope = Some(why);
                    Bytes::from(m.body.clone())
                }
                Unwrapped::Envelope(envelope) => {
                    attributes.add(&envelope.attributes);
                    sns_headers(&envelope, &mut headers, &mut dropped);
                    Bytes::from(envelope.message)
                }
            }
        };
        if let Some(signature) = self
            .signer
            .as_ref()
            .and_then(|s| s.sign(now_s, msgid.as_bytes(), &body))
        {
            headers.append(HeaderName::from_static(SIGNATURE_HEADER), signature);
        }
        Ok(Post {
            request: Request {
                url,
                target,
                headers,
                body,
            },
            dropped,
            malformed_envelope,
        })
    }
}

/// Attributes becoming `X-Aws-Sqsd-Attr-*` headers, from the message and
/// then from its SNS envelope.
struct Attributes<'a> {
    headers: &'a mut HeaderMap,
    /// Names already sent, in lower case: names differing only in case
    /// need not be neighbours in byte order (`Ab` < `aa` < `ab`).
    sent: HashSet<String>,
    dropped: &'a mut Vec<(String, Dropped)>,
}

impl Attributes<'_> {
    /// Header names ignore case, attribute names do not: of attributes
    /// whose names differ only in case, the first (in byte order within
    /// `list`, upper case first; the message's before its envelope's) is
    /// sent and the others are dropped.
    fn add(&mut self, list: &[(String, String)]) {
        for (name, value) in list {
            if name.starts_with("beanstalk.sqsd.") {
                continue;
            }
            if self.sent.contains(&name.to_ascii_lowercase()) {
                self.dropped.push((name.clone(), Dropped::DuplicateName));
                continue;
            }
            let Ok(header) = HeaderName::from_bytes(format!("x-aws-sqsd-attr-{name}").as_bytes())
            else {
                self.dropped.push((name.clone(), Dropped::BadName));
                continue;
            };
            match header_value(value) {
                Some(v) => {
                    self.headers.append(header, v);
                    self.sent.insert(name.to_ascii_lowercase());
                }
                None => self.dropped.push((name.clone(), Dropped::BadValue)),
            }
        }
    }
}

/// The envelope's own facts as `X-Aws-Sqsd-Sns-*` headers; a value that
/// cannot be a header is dropped and reported as `sns.<Field>`.
fn sns_headers(
    envelope: &sns::Envelope,
    headers: &mut HeaderMap,
    dropped: &mut Vec<(String, Dropped)>,
) {
    let fields = [
        (
            "x-aws-sqsd-sns-topic-arn",
            "TopicArn",
            Some(&envelope.topic_arn),
        ),
        (
            "x-aws-sqsd-sns-message-id",
            "MessageId",
            Some(&envelope.message_id),
        ),
        (
            "x-aws-sqsd-sns-timestamp",
            "Timestamp",
            envelope.timestamp.as_ref(),
        ),
        (
            "x-aws-sqsd-sns-subject",
            "Subject",
            envelope.subject.as_ref(),
        ),
    ];
    for (header, field, value) in fields {
        let Some(value) = value else { continue };
        match header_value(value) {
            Some(v) => {
                headers.append(HeaderName::from_static(header), v);
            }
            None => dropped.push((format!("sns.{field}"), Dropped::BadValue)),
        }
    }
}

fn text_or_empty(text: &str) -> HeaderValue {
    header_value(text).unwrap_or(HeaderValue::from_static(""))
}

/// Epoch milliseconds as `2019-11-14T00:47:00Z`; empty when unknown.
fn timestamp(ms: Option<i64>) -> HeaderValue {
    let text = ms
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .map(iso8601)
        .unwrap_or_default();
    text_or_empty(&text)
}

pub fn iso8601(t: DateTime<Utc>) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Elastic Beanstalk's `2019-11-14 00:47:00 UTC` as ISO 8601; other text as is.
pub fn scheduled_at(eb: &str) -> String {
    let trimmed = eb.trim().trim_end_matches("UTC").trim_end();
    match NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%d %H:%M:%S") {
        Ok(t) => iso8601(t.and_utc()),
        Err(_) => eb.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cron::format::TASK_BODY;

    const NOW: i64 = 1_700_000_000;

    fn template() -> Template {
        Template::new("http://127.0.0.1:8080", "/work", "application/json", "jobs")
    }

    fn message() -> Incoming {
        Incoming {
            id: "m-1".into(),
            receipt_handle: "r".into(),
            body: "{\"a\":1}".into(),
            sent_at_ms: Some(1_573_692_420_123),
            first_received_at_ms: Some(1_573_692_421_999),
            receive_count: Some(3),
            sender_id: Some("AIDAEXAMPLE".into()),
            trace_header: Some("Root=1-5759e988-bd862e3fe1be46a994272793".into()),
            group_id: None,
            attributes: vec![("color".into(), "blue".into()), ("n".into(), "42".into())],
            ..Incoming::default()
        }
    }

    fn get<'a>(r: &'a Post, name: &str) -> Option<&'a str> {
        r.request.headers.get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn headers_have_the_documented_values() {
        let r = template().request(&message(), NOW).unwrap();
        assert_eq!(r.request.url.as_str(), "http://127.0.0.1:8080/work");
        assert_eq!(r.request.target.as_str(), "/work");
        assert!(get(&r, "user-agent").unwrap().starts_with("aws-sqsd/"));
        assert_eq!(get(&r, "content-type"), Some("application/json"));
        assert_eq!(get(&r, "x-aws-sqsd-msgid"), Some("m-1"));
        assert_eq!(get(&r, "x-aws-sqsd-queue"), Some("jobs"));
        assert_eq!(get(&r, "x-aws-sqsd-sent-at"), Some("2019-11-14T00:47:00Z"));
        assert_eq!(
            get(&r, "x-aws-sqsd-first-received-at"),
            Some("2019-11-14T00:47:01Z")
        );
        assert_eq!(get(&r, "x-aws-sqsd-receive-count"), Some("3"));
        assert_eq!(get(&r, "x-aws-sqsd-sender-id"), Some("AIDAEXAMPLE"));
        assert_eq!(get(&r, "x-aws-sqsd-path"), Some(""));
        assert_eq!(
            get(&r, "x-amzn-trace-id"),
            Some("Root=1-5759e988-bd862e3fe1be46a994272793")
        );
        assert_eq!(get(&r, "x-aws-sqsd-attr-color"), Some("blue"));
        assert_eq!(get(&r, "x-aws-sqsd-attr-n"), Some("42"));
        assert_eq!(get(&r, "x-aws-sqsd-taskname"), None);
        assert_eq!(&r.request.body[..], b"{\"a\":1}");
    }

    #[test]
    fn per_message_path_is_used_and_echoed() {
        let mut m = message();
        m.attributes.push((PATH_ATTR.into(), "/other?x=1".into()));
        let r = template().request(&m, NOW).unwrap();
        assert_eq!(r.request.url.as_str(), "http://127.0.0.1:8080/other?x=1");
        assert_eq!(r.request.target.as_str(), "/other?x=1");
        assert_eq!(get(&r, "x-aws-sqsd-path"), Some("/other?x=1"));
        assert_eq!(get(&r, "x-aws-sqsd-attr-beanstalk.sqsd.path"), None);
    }

    #[test]
    fn paths_that_leave_the_application_are_refused() {
        for bad in [
            "//evil.example/x",
            "http://evil.example/x",
            "https://evil.example",
            "/\\evil.example/x",
            "evil.example/x",
            "",
            "/a\r\nHost: evil",
            "/a b",
            "/a\\b",
        ] {
            let mut m = message();
            m.attributes.push((PATH_ATTR.into(), bad.into()));
            assert!(template().request(&m, NOW).is_err(), "{bad:?} accepted");
        }
        for good in ["/", "/a/b", "/@evil.example", "/a:80", "/%2F%2Fx"] {
            let mut m = message();
            m.attributes.push((PATH_ATTR.into(), good.into()));
            let r = template()
                .request(&m, NOW)
                .unwrap_or_else(|e| panic!("{good:?}: {e}"));
            assert_eq!(
                r.request.url.host_str(),
                Some("127.0.0.1"),
                "{}",
                r.request.url
            );
            assert_eq!(r.request.url.port(), Some(8080), "{}", r.request.url);
        }
    }

    #[test]
    fn unsafe_attributes_are_dropped_and_the_rest_kept() {
        let mut m = message();
        m.attributes
            .push(("evil".into(), "a\r\nX-Injected: 1".into()));
        m.attributes.push(("nul".into(), "a\0b".into()));
        m.attributes.push(("bad name".into(), "v".into()));
        m.attributes.push(("unicode".into(), "café".into()));
        let r = template().request(&m, NOW).unwrap();
        assert_eq!(get(&r, "x-aws-sqsd-attr-evil"), None);
        assert_eq!(get(&r, "x-injected"), None);
        assert_eq!(get(&r, "x-aws-sqsd-attr-nul"), None);
        assert_eq!(get(&r, "x-aws-sqsd-attr-color"), Some("blue"));
        let uni = r.request.headers.get("x-aws-sqsd-attr-unicode").unwrap();
        assert_eq!(uni.as_bytes(), "café".as_bytes());
        let mut reasons: Vec<_> = r.dropped.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        reasons.sort_by_key(|(n, _)| n.to_string());
        assert_eq!(
            reasons,
            vec![
                ("bad name", Dropped::BadName),
                ("evil", Dropped::BadValue),
                ("nul", Dropped::BadValue)
            ]
        );
    }

    #[test]
    fn periodic_task_has_task_headers_and_empty_body() {
        let mut m = message();
        m.body = TASK_BODY.into();
        m.attributes = vec![
            (PATH_ATTR.into(), "/backup".into()),
            (TASK_NAME_ATTR.into(), "backup-job".into()),
            (SCHEDULED_TIME_ATTR.into(), "2019-11-14 00:47:00 UTC".into()),
        ];
        let r = template().request(&m, NOW).unwrap();
        assert_eq!(r.request.url.as_str(), "http://127.0.0.1:8080/backup");
        assert_eq!(get(&r, "x-aws-sqsd-taskname"), Some("backup-job"));
        assert_eq!(
            get(&r, "x-aws-sqsd-scheduled-at"),
            Some("2019-11-14T00:47:00Z")
        );
        assert!(r.request.body.is_empty());
        assert!(r
            .request
            .headers
            .iter()
            .all(|(k, _)| !k.as_str().starts_with("x-aws-sqsd-attr-")));
    }

    #[test]
    fn missing_system_attributes_give_empty_headers() {
        let m = Incoming {
            id: "x".into(),
            ..Default::default()
        };
        let r = template().request(&m, NOW).unwrap();
        assert_eq!(get(&r, "x-aws-sqsd-sent-at"), Some(""));
        assert_eq!(get(&r, "x-aws-sqsd-receive-count"), Some(""));
        assert_eq!(get(&r, "x-amzn-trace-id"), None);
    }

    #[test]
    fn worker_url_with_a_base_path_keeps_it() {
        let t = Template::new("http://localhost:8080/api", "/", "text/plain", "q");
        assert_eq!(
            t.request(&message(), NOW).unwrap().request.url.as_str(),
            "http://localhost:8080/api/"
        );
        let mut m = message();
        m.attributes.push((PATH_ATTR.into(), "/jobs?x=1".into()));
        let r = t.request(&m, NOW).unwrap();
        assert_eq!(r.request.url.as_str(), "http://localhost:8080/api/jobs?x=1");
        assert_eq!(r.request.target.as_str(), "/api/jobs?x=1");
    }

    #[test]
    fn target_is_the_encoded_path_and_query_of_the_url() {
        let t = Template::new("http://localhost:8080/api", "/", "text/plain", "q");
        let mut m = message();
        m.attributes
            .push((PATH_ATTR.into(), "/caf\u{e9}/<x>?k=\u{e9}".into()));
        let r = t.request(&m, NOW).unwrap();
        assert_eq!(
            r.request.url.as_str(),
            "http://localhost:8080/api/caf%C3%A9/%3Cx%3E?k=%C3%A9"
        );
        assert_eq!(r.request.target.as_str(), "/api/caf%C3%A9/%3Cx%3E?k=%C3%A9");
        // Without a path of its own, a message gets the prepared default.
        let r = t.request(&message(), NOW).unwrap();
        assert_eq!(r.request.target.as_str(), "/api/");
    }

    #[test]
    fn received_messages_keep_what_the_daemon_uses() {
        let wire = r#"{"MessageId":"m1","ReceiptHandle":"rh","MD5OfBody":"x",
            "Body":"{\"a\":\"\u00e9\\n\"}",
            "Attributes":{"SentTimestamp":"1573692420123","ApproximateReceiveCount":"2",
              "ApproximateFirstReceiveTimestamp":"1573692421999","SenderId":"AID",
              "AWSTraceHeader":"Root=1-a","MessageGroupId":"g","SequenceNumber":"9"},
            "MessageAttributes":{"b":{"DataType":"String","StringValue":"x"},
              "a":{"DataType":"Number.int","StringValue":"7"},
              "bin":{"DataType":"Binary","BinaryValue":"AAE="}}}"#;
        let m = Incoming::from(serde_json::from_str::<WireMessage>(wire).unwrap());
        assert_eq!(m.id, "m1");
        assert_eq!(m.receipt_handle, "rh");
        assert_eq!(m.body, "{\"a\":\"\u{e9}\\n\"}");
        assert_eq!(m.sent_at_ms, Some(1_573_692_420_123));
        assert_eq!(m.first_received_at_ms, Some(1_573_692_421_999));
        assert_eq!(m.receive_count, Some(2));
        assert_eq!(m.sender_id.as_deref(), Some("AID"));
        assert_eq!(m.trace_header.as_deref(), Some("Root=1-a"));
        assert_eq!(m.group_id.as_deref(), Some("g"));
        assert_eq!(
            m.attributes,
            vec![("a".into(), "7".into()), ("b".into(), "x".into())]
        );
    }

    #[test]
    fn message_paths_never_leave_the_base_path() {
        let t = Template::new("http://localhost:8080/api", "/", "text/plain", "q");
        for bad in [
            "/../admin/delete-all",
            "/%2e%2e/internal",
            "/a/../../x",
            "/.%2E/x",
        ] {
            let mut m = message();
            m.attributes.push((PATH_ATTR.into(), bad.into()));
            match t.request(&m, NOW) {
                Err(e) => assert_eq!(e, PathError::DotSegment, "{bad:?}"),
                Ok(p) => panic!("{bad:?} was sent to {}", p.request.url),
            }
        }
        let mut m = message();
        m.attributes.push((PATH_ATTR.into(), "/jobs/run".into()));
        let p = t.request(&m, NOW).unwrap();
        assert_eq!(p.request.target.as_str(), "/api/jobs/run");
    }

    #[test]
    fn attributes_differing_only_in_case_send_one_header() {
        let mut m = message();
        m.attributes = vec![
            ("FOO".into(), "1".into()),
            ("Foo".into(), "2".into()),
            ("foo".into(), "3".into()),
        ];
        let r = template().request(&m, NOW).unwrap();
        let values: Vec<&str> = r
            .request
            .headers
            .get_all("x-aws-sqsd-attr-foo")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(values, vec!["1"]);
        let dropped: Vec<(&str, Dropped)> =
            r.dropped.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        assert_eq!(
            dropped,
            vec![
                ("Foo", Dropped::DuplicateName),
                ("foo", Dropped::DuplicateName)
            ]
        );
    }

    #[test]
    fn case_twins_that_are_not_neighbours_in_byte_order_send_one_header() {
        let mut m = message();
        // Sorted by bytes: "Ab" < "aa" < "ab"; "Ab" and "ab" are twins.
        m.attributes = vec![
            ("Ab".into(), "1".into()),
            ("aa".into(), "2".into()),
            ("ab".into(), "3".into()),
        ];
        let r = template().request(&m, NOW).unwrap();
        let values: Vec<&str> = r
            .request
            .headers
            .get_all("x-aws-sqsd-attr-ab")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(values, vec!["1"]);
        assert_eq!(r.dropped, vec![("ab".to_string(), Dropped::DuplicateName)]);
    }

    #[test]
    fn an_attribute_value_with_a_tab_is_sent() {
        let mut m = message();
        m.attributes = vec![("t".into(), "a\tb".into())];
        let r = template().request(&m, NOW).unwrap();
        assert_eq!(get(&r, "x-aws-sqsd-attr-t"), Some("a\tb"));
        assert!(r.dropped.is_empty());
    }

    #[test]
    fn task_attributes_without_the_task_body_keep_the_body() {
        let mut m = message();
        m.body = "real work".into();
        m.attributes = vec![
            (PATH_ATTR.into(), "/backup".into()),
            (TASK_NAME_ATTR.into(), "backup-job".into()),
            (SCHEDULED_TIME_ATTR.into(), "2019-11-14 00:47:00 UTC".into()),
        ];
        let r = template().request(&m, NOW).unwrap();
        assert_eq!(&r.request.body[..], b"real work");
        assert_eq!(get(&r, "x-aws-sqsd-taskname"), None);
        assert_eq!(r.request.url.as_str(), "http://127.0.0.1:8080/backup");
    }

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn trusted() -> Template {
        template()
            .signed_by(Arc::new(Signer::new(vec![KEY.to_vec()])))
            .with_token(Some("tok-123"))
            .unwrapping_sns(true)
    }

    #[test]
    fn a_signed_post_signs_the_time_id_and_body_sent_and_carries_the_token() {
        let r = trusted().request(&message(), NOW).unwrap();
        let expected = format!(
            "t={NOW},v1={}",
            signing::signature(KEY, NOW, b"m-1", b"{\"a\":1}")
        );
        assert_eq!(get(&r, "x-sqsd-signature"), Some(expected.as_str()));
        assert_eq!(get(&r, "authorization"), Some("Bearer tok-123"));
        // Without a signer or token, neither header.
        let r = template().request(&message(), NOW).unwrap();
        assert_eq!(get(&r, "x-sqsd-signature"), None);
        assert_eq!(get(&r, "authorization"), None);
    }

    #[test]
    fn a_periodic_task_is_signed_over_the_empty_body() {
        let mut m = message();
        m.body = TASK_BODY.into();
        m.attributes = vec![
            (PATH_ATTR.into(), "/backup".into()),
            (TASK_NAME_ATTR.into(), "backup-job".into()),
        ];
        let r = trusted().request(&m, NOW).unwrap();
        let expected = format!("t={NOW},v1={}", signing::signature(KEY, NOW, b"m-1", b""));
        assert_eq!(get(&r, "x-sqsd-signature"), Some(expected.as_str()));
    }

    fn envelope(extra: &str) -> String {
        format!(
            r#"{{"Type":"Notification","MessageId":"sns-1","TopicArn":"arn:aws:sns:us-east-1:1:t",
            "Message":"inner body","Timestamp":"2024-01-02T03:04:05.678Z"{extra}}}"#
        )
    }

    #[test]
    fn an_sns_envelope_is_posted_as_its_message_with_its_facts_as_headers() {
        let mut m = message();
        m.body = envelope(
            r#","Subject":"Hi","MessageAttributes":{
                "color":{"Type":"String","Value":"red"},
                "size":{"Type":"Number","Value":"3"},
                "bin":{"Type":"Binary","Value":"AAE="},
                "bad name":{"Type":"String","Value":"x"},
                "evil":{"Type":"String","Value":"a\r\nX-Injected: 1"},
                "beanstalk.sqsd.path":{"Type":"String","Value":"/elsewhere"}}"#,
        );
        let r = trusted().request(&m, NOW).unwrap();
        assert_eq!(&r.request.body[..], b"inner body");
        assert_eq!(r.request.url.as_str(), "http://127.0.0.1:8080/work");
        assert_eq!(get(&r, "x-aws-sqsd-msgid"), Some("m-1"));
        assert_eq!(
            get(&r, "x-aws-sqsd-sns-topic-arn"),
            Some("arn:aws:sns:us-east-1:1:t")
        );
        assert_eq!(get(&r, "x-aws-sqsd-sns-message-id"), Some("sns-1"));
        assert_eq!(
            get(&r, "x-aws-sqsd-sns-timestamp"),
            Some("2024-01-02T03:04:05.678Z")
        );
        assert_eq!(get(&r, "x-aws-sqsd-sns-subject"), Some("Hi"));
        assert_eq!(get(&r, "x-aws-sqsd-attr-size"), Some("3"));
        assert_eq!(get(&r, "x-aws-sqsd-attr-bin"), None);
        assert_eq!(get(&r, "x-injected"), None);
        // The message's own attribute wins over the envelope's of that name.
        let colors: Vec<_> = r
            .request
            .headers
            .get_all("x-aws-sqsd-attr-color")
            .iter()
            .collect();
        assert_eq!(colors, vec!["blue"]);
        let mut dropped: Vec<_> = r.dropped.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        dropped.sort_by_key(|(n, _)| n.to_string());
        assert_eq!(
            dropped,
            vec![
                ("bad name", Dropped::BadName),
                ("color", Dropped::DuplicateName),
                ("evil", Dropped::BadValue)
            ]
        );
        assert!(r.malformed_envelope.is_none());
        // Signed over the body sent: the unwrapped message.
        let expected = format!(
            "t={NOW},v1={}",
            signing::signature(KEY, NOW, b"m-1", b"inner body")
        );
        assert_eq!(get(&r, "x-sqsd-signature"), Some(expected.as_str()));
    }

    #[test]
    fn without_a_subject_there_is_no_subject_header_and_off_means_unchanged() {
        let mut m = message();
        m.body = envelope("");
        let r = trusted().request(&m, NOW).unwrap();
        assert_eq!(&r.request.body[..], b"inner body");
        assert_eq!(get(&r, "x-aws-sqsd-sns-subject"), None);
        let r = template().request(&m, NOW).unwrap();
        assert_eq!(&r.request.body[..], m.body.as_bytes());
        assert_eq!(get(&r, "x-aws-sqsd-sns-topic-arn"), None);
    }

    #[test]
    fn a_malformed_envelope_is_sent_unchanged_and_reported() {
        let mut m = message();
        m.body = r#"{"Type":"Notification","MessageId":"x","Message":"no topic"}"#.into();
        let r = trusted().request(&m, NOW).unwrap();
        assert_eq!(&r.request.body[..], m.body.as_bytes());
        assert_eq!(get(&r, "x-aws-sqsd-sns-message-id"), None);
        assert_eq!(r.malformed_envelope.as_deref(), Some("TopicArn is missing"));
        let mut m = message();
        m.body = "just text".into();
        let r = trusted().request(&m, NOW).unwrap();
        assert_eq!(&r.request.body[..], b"just text");
        assert!(r.malformed_envelope.is_none());
    }

    #[test]
    fn an_envelope_value_that_cannot_be_a_header_is_dropped() {
        let mut m = message();
        m.body = envelope(r#","Subject":"line\nbreak""#);
        let r = trusted().request(&m, NOW).unwrap();
        assert_eq!(get(&r, "x-aws-sqsd-sns-subject"), None);
        assert_eq!(
            r.dropped,
            vec![("sns.Subject".to_string(), Dropped::BadValue)]
        );
        assert_eq!(&r.request.body[..], b"inner body");
    }
}
