//! SNS notification envelopes (`sns_unwrap`): a topic subscribed to the
//! worker queue without raw delivery wraps each message in a JSON envelope;
//! [`unwrap`] finds the message and the facts the application may want
//! (topic, SNS message id, time, subject, attributes) in it.
//!
//! Only a JSON object whose `Type` is `"Notification"` is an envelope. Any
//! other body is not looked into further than a cheap check of its text,
//! so ordinary messages cost next to nothing. Nothing of the envelope is
//! trusted: its values become headers only through the same checks as SQS
//! attributes (in `message`), and SNS's own signature in the envelope is not
//! checked (the queue's access policy decides who may send).

use serde::Deserialize;
use serde_json::Value;

/// What a body is, to `sns_unwrap`.
#[derive(Debug, PartialEq)]
pub enum Unwrapped {
    /// Not an SNS notification: delivered as it is.
    NotEnvelope,
    /// Claims to be a notification but is not a usable one: delivered as it
    /// is. The reason never quotes the body.
    Malformed(String),
    Envelope(Envelope),
}

/// The parts of a notification the POST carries.
#[derive(Debug, Default, PartialEq)]
pub struct Envelope {
    pub message: String,
    pub message_id: String,
    pub topic_arn: String,
    pub timestamp: Option<String>,
    pub subject: Option<String>,
    /// String and Number attributes (SQS's rule: a custom `.suffix` is
    /// allowed), sorted by name; Binary and anything else are left out.
    pub attributes: Vec<(String, String)>,
}

/// The fields of interest, each as any JSON value so that a wrong type is
/// told apart from a missing field; every other field is skipped unbuilt.
#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "Type")]
    kind: Option<Value>,
    #[serde(rename = "MessageId")]
    message_id: Option<Value>,
    #[serde(rename = "TopicArn")]
    topic_arn: Option<Value>,
    #[serde(rename = "Message")]
    message: Option<Value>,
    #[serde(rename = "Timestamp")]
    timestamp: Option<Value>,
    #[serde(rename = "Subject")]
    subject: Option<Value>,
    #[serde(rename = "MessageAttributes")]
    message_attributes: Option<Value>,
}

/// Whether `body` could be a notification at all: a JSON object whose text
/// names both `"Type"` and `"Notification"`. Everything else is passed on
/// without being parsed.
fn may_be_envelope(body: &str) -> bool {
    body.trim_start().starts_with('{') && body.contains("\"Type\"") && body.contains("Notification")
}

/// Looks into `body` for an SNS notification envelope.
pub fn unwrap(body: &str) -> Unwrapped {
    if !may_be_envelope(body) {
        return Unwrapped::NotEnvelope;
    }
    // serde_json stops at 128 levels of nesting; the body is at most what
    // SQS allows in one message.
    let wire: Wire = match serde_json::from_str(body) {
        Ok(w) => w,
        Err(e) => {
            let what = if e.is_data() {
                // A repeated field, say: JSON, but no single notification.
                "not a valid notification object"
            } else {
                "not valid JSON"
            };
            return Unwrapped::Malformed(format!(
                "{what} (at line {} column {})",
                e.line(),
                e.column()
            ));
        }
    };
    if wire.kind.as_ref().and_then(Value::as_str) != Some("Notification") {
        return Unwrapped::NotEnvelope;
    }
    let text = |v: Option<Value>, name: &str| match v {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("{name} is not a string")),
        None => Err(format!("{name} is missing")),
    };
    let optional = |v: Option<Value>, name: &str| match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{name} is not a string")),
    };
    let parts = (|| {
        Ok::<_, String>(Envelope {
            message_id: text(wire.message_id, "MessageId")?,
            topic_arn: text(wire.topic_arn, "TopicArn")?,
            message: text(wire.message, "Message")?,
            timestamp: optional(wire.timestamp, "Timestamp")?,
            subject: optional(wire.subject, "Subject")?,
            attributes: attributes(wire.message_attributes)?,
        })
    })();
    match parts {
        Ok(envelope) => Unwrapped::Envelope(envelope),
        Err(why) => Unwrapped::Malformed(why),
    }
}

/// Most attributes SNS puts on a message.
pub const MAX_SNS_ATTRIBUTES: usize = 10;

/// `{"name": {"Type": "String", "Value": "..."}}` as sorted pairs, String
/// and Number only.
fn attributes(value: Option<Value>) -> Result<Vec<(String, String)>, String> {
    let map = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(map)) => map,
        Some(_) => return Err("MessageAttributes is not an object".into()),
    };
    // SNS itself allows 10 attributes per message: more is not an
    // envelope SNS wrote, and would make a header block of any size.
    if map.len() > MAX_SNS_ATTRIBUTES {
        return Err(format!(
            "MessageAttributes holds {} attributes; SNS allows at most {MAX_SNS_ATTRIBUTES}",
            map.len()
        ));
    }
    let mut out: Vec<(String, String)> = map
        .into_iter()
        .filter_map(|(name, attribute)| {
            let kind = attribute.get("Type")?.as_str()?;
            let passes = ["String", "Number"]
                .iter()
                .any(|t| kind == *t || kind.strip_prefix(t).is_some_and(|r| r.starts_with('.')));
            if !passes {
                return None;
            }
            let value = attribute.get("Value")?.as_str()?.to_string();
            Some((name, value))
        })
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{
      "Type" : "Notification",
      "MessageId" : "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
      "TopicArn" : "arn:aws:sns:us-west-2:123456789012:MyTopic",
      "Subject" : "My First Message",
      "Message" : "Hello world!\n{\"nested\":true}",
      "Timestamp" : "2012-05-02T00:54:06.655Z",
      "SignatureVersion" : "1",
      "Signature" : "EXAMPLEw6JRN...",
      "SigningCertURL" : "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
      "UnsubscribeURL" : "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe",
      "MessageAttributes" : {
        "color" : {"Type":"String","Value":"blue"},
        "count" : {"Type":"Number","Value":"42"},
        "blob" : {"Type":"Binary","Value":"AAE="},
        "tags" : {"Type":"String.Array","Value":"[\"a\",\"b\"]"},
        "odd" : {"Type":"Stringy","Value":"x"},
        "broken" : {"Type":"String"}
      }
    }"#;

    #[test]
    fn a_full_notification_is_unwrapped() {
        let Unwrapped::Envelope(e) = unwrap(FULL) else {
            panic!("not unwrapped: {:?}", unwrap(FULL));
        };
        assert_eq!(e.message, "Hello world!\n{\"nested\":true}");
        assert_eq!(e.message_id, "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324");
        assert_eq!(e.topic_arn, "arn:aws:sns:us-west-2:123456789012:MyTopic");
        assert_eq!(e.subject.as_deref(), Some("My First Message"));
        assert_eq!(e.timestamp.as_deref(), Some("2012-05-02T00:54:06.655Z"));
        assert_eq!(
            e.attributes,
            vec![
                ("color".to_string(), "blue".to_string()),
                ("count".to_string(), "42".to_string()),
                ("tags".to_string(), "[\"a\",\"b\"]".to_string()),
            ]
        );
    }

    #[test]
    fn a_null_subject_and_no_attributes_are_fine() {
        let body = r#"{"Type":"Notification","MessageId":"m","TopicArn":"arn:t","Message":"","Subject":null}"#;
        assert_eq!(
            unwrap(body),
            Unwrapped::Envelope(Envelope {
                message_id: "m".into(),
                topic_arn: "arn:t".into(),
                ..Envelope::default()
            })
        );
    }

    #[test]
    fn other_bodies_are_not_envelopes() {
        for body in [
            "",
            "plain text with \"Type\" and Notification",
            "[\"Type\",\"Notification\"]",
            r#"{"Type":"SubscriptionConfirmation","Message":"Notification"}"#,
            r#"{"kind":"Notification","MessageId":"m"}"#,
            r#"{"Type":"notification","MessageId":"m","TopicArn":"t","Message":"x"}"#,
            r#"{"Type":3,"Message":"Notification"}"#,
        ] {
            assert_eq!(unwrap(body), Unwrapped::NotEnvelope, "{body:?}");
        }
    }

    #[test]
    fn broken_notifications_are_malformed_without_quoting_the_body() {
        for (body, why) in [
            (
                r#"{"Type":"Notification","MessageId":"m","Message":"x"}"#,
                "TopicArn is missing",
            ),
            (
                r#"{"Type":"Notification","MessageId":"m","TopicArn":"t","Message":{"a":1}}"#,
                "Message is not a string",
            ),
            (
                r#"{"Type":"Notification","MessageId":"m","TopicArn":"t","Message":"x","Subject":7}"#,
                "Subject is not a string",
            ),
            (
                r#"{"Type":"Notification","MessageId":"m","TopicArn":"t","Message":"x","MessageAttributes":[1]}"#,
                "MessageAttributes is not an object",
            ),
            (
                r#"{"Type":"Notification","MessageId":"secret-1","Message":"x""#,
                "not valid JSON",
            ),
            (
                r#"{"Type":"Notification","Type":"Notification","MessageId":"m"}"#,
                "not a valid notification object",
            ),
        ] {
            match unwrap(body) {
                Unwrapped::Malformed(reason) => {
                    assert!(reason.contains(why), "{body:?}: {reason}");
                    assert!(!reason.contains("secret-1"), "{reason}");
                }
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_followed() {
        let many: String = (0..11)
            .map(|i| format!(r#""a{i}":{{"Type":"String","Value":"v"}}"#))
            .collect::<Vec<_>>()
            .join(",");
        let crowded = format!(
            r#"{{"Type":"Notification","MessageId":"m","TopicArn":"t","Message":"x","MessageAttributes":{{{many}}}}}"#
        );
        assert!(matches!(unwrap(&crowded), Unwrapped::Malformed(r) if r.contains("at most 10")));
        let deep = format!(
            "{{\"Type\":\"Notification\",\"x\":{}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(matches!(unwrap(&deep), Unwrapped::Malformed(_)));
    }
}
