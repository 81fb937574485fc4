//! The copy's record attribute, the 10-attribute rule, deduplication ids
//! and reading the redrive policy.

use super::*;

fn attr(data_type: &str, string: Option<&str>, binary: Option<&str>) -> WireAttribute {
    WireAttribute {
        data_type: data_type.into(),
        string_value: string.map(String::from),
        binary_value: binary.map(String::from),
    }
}

fn copy<'a>(attributes: &'a [(String, WireAttribute)]) -> Copy<'a> {
    Copy {
        body: "payload",
        attributes,
        message_id: "5fea7756-0ea4-451a-a703-a558b933e274",
        group_id: None,
        receive_count: 3,
        status: 410,
        // 2024-02-29T12:34:56.789Z
        at_ms: 1_709_210_096_789,
    }
}

#[test]
fn the_record_names_status_time_queue_id_and_receive_count() {
    let text = record_json(&copy(&[]), "orders \"eu\"");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["status"], 410);
    assert_eq!(v["at"], "2024-02-29T12:34:56.789Z");
    assert_eq!(v["queue"], "orders \"eu\"");
    assert_eq!(v["message_id"], "5fea7756-0ea4-451a-a703-a558b933e274");
    assert_eq!(v["receive_count"], 3);
    assert_eq!(v.as_object().map(|o| o.len()), Some(5), "{text}");
    // Fields in the documented order.
    assert!(text.starts_with("{\"status\":410,\"at\":"), "{text}");
}

#[test]
fn a_copy_keeps_every_attribute_and_adds_the_record() {
    let original = vec![
        (
            "bin".to_string(),
            attr("Binary.gif", None, Some("AAEC/w==")),
        ),
        ("n".to_string(), attr("Number.int", Some("42"), None)),
        ("s".to_string(), attr("String", Some("héllo"), None)),
    ];
    let (out, recorded) = copy_attributes(&original, "{}".into()).expect("attributes");
    assert!(recorded);
    assert_eq!(out.len(), 4);
    assert_eq!(out["bin"].data_type(), "Binary.gif");
    assert_eq!(
        out["bin"].binary_value().map(|b| b.as_ref().to_vec()),
        Some(vec![0, 1, 2, 255])
    );
    assert_eq!(out["n"].data_type(), "Number.int");
    assert_eq!(out["n"].string_value(), Some("42"));
    assert_eq!(out["s"].string_value(), Some("héllo"));
    assert_eq!(out[RECORD_ATTR].data_type(), "String");
    assert_eq!(out[RECORD_ATTR].string_value(), Some("{}"));
}

#[test]
fn ten_attributes_leave_no_room_for_the_record() {
    let named = |n: usize| -> Vec<(String, WireAttribute)> {
        (0..n)
            .map(|i| (format!("a{i}"), attr("String", Some("v"), None)))
            .collect()
    };
    let (out, recorded) = copy_attributes(&named(9), "{}".into()).expect("attributes");
    assert!(recorded);
    assert_eq!(out.len(), 10);

    let (out, recorded) = copy_attributes(&named(10), "{}".into()).expect("attributes");
    assert!(!recorded);
    assert_eq!(out.len(), 10);
    assert!(!out.contains_key(RECORD_ATTR));

    // A record from an earlier dead-lettering is replaced, even at ten.
    let mut again = named(9);
    again.push((RECORD_ATTR.to_string(), attr("String", Some("old"), None)));
    let (out, recorded) = copy_attributes(&again, "new".into()).expect("attributes");
    assert!(recorded);
    assert_eq!(out.len(), 10);
    assert_eq!(out[RECORD_ATTR].string_value(), Some("new"));
}

#[test]
fn a_binary_value_that_is_not_base64_fails_the_copy() {
    let bad = vec![("b".to_string(), attr("Binary", None, Some("not base64!")))];
    assert!(copy_attributes(&bad, "{}".into()).is_err());
}

#[test]
fn deduplication_id_is_the_message_id_or_its_hash() {
    let id = "5fea7756-0ea4-451a-a703-a558b933e274";
    assert_eq!(dedup_id(id), id);
    let long = "x".repeat(129);
    let hashed = dedup_id(&long);
    assert_eq!(hashed.len(), 64);
    assert_ne!(hashed, dedup_id(&"x".repeat(130)));
    assert_eq!(dedup_id("with space").len(), 64);
    assert_eq!(dedup_id("").len(), 64);
}

#[test]
fn the_target_comes_from_the_redrive_policy() {
    let attrs = |p: &str| HashMap::from([(QueueAttributeName::RedrivePolicy, p.to_string())]);
    let arn = "arn:aws:sqs:eu-west-1:123456789012:orders-dlq";
    let policy = format!("{{\"deadLetterTargetArn\":\"{arn}\",\"maxReceiveCount\":5}}");
    assert_eq!(redrive_target(&attrs(&policy)).as_deref(), Some(arn));
    assert_eq!(redrive_target(&HashMap::new()), None);
    assert_eq!(redrive_target(&attrs("")), None);
    assert_eq!(redrive_target(&attrs("{\"maxReceiveCount\":5}")), None);
    assert_eq!(parse_queue_arn(arn), Some(("123456789012", "orders-dlq")));
    assert_eq!(
        parse_queue_arn("arn:aws-cn:sqs:cn-north-1:1:q.fifo"),
        Some(("1", "q.fifo"))
    );
    assert_eq!(parse_queue_arn("arn:aws:sns:eu-west-1:1:topic"), None);
    assert_eq!(parse_queue_arn("orders-dlq"), None);
}
