//! The Query protocol: form-encoded parameters with flattened, numbered
//! names (`Attribute.1.Name`, `MessageAttribute.2.Value.StringValue`,
//! `SendMessageBatchRequestEntry.3.Id`) become the JSON protocol's documents,
//! and results become the XML that older SDKs parse.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::error::ApiError;

/// Most parameters one request may carry. The largest real request, a
/// batch of ten messages with ten attributes each, has about 450.
pub const MAX_PARAMETERS: usize = 1000;
/// Most dot-separated parts in one parameter name. The deepest real one,
/// `SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue`,
/// has six.
pub const MAX_NAME_PARTS: usize = 8;

/// `a=1&b=x+y` into pairs, percent-decoded, added to `out`; refused past
/// [`MAX_PARAMETERS`] in all, before they cost memory.
pub fn decode_form(bytes: &[u8], out: &mut Vec<(String, String)>) -> Result<(), ApiError> {
    for (k, v) in form_urlencoded::parse(bytes) {
        if out.len() >= MAX_PARAMETERS {
            return Err(ApiError::malformed(format!(
                "The request has more than {MAX_PARAMETERS} parameters."
            )));
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(())
}

/// Parameters whose numbered items form a list of strings, and the JSON
/// member each becomes.
const LISTS: &[(&str, &str)] = &[
    ("AttributeName", "AttributeNames"),
    ("MessageAttributeName", "MessageAttributeNames"),
    ("MessageSystemAttributeName", "MessageSystemAttributeNames"),
    ("TagKey", "TagKeys"),
];
/// Parameters whose numbered items are key/value pairs: member, key field.
const PAIRS: &[(&str, &str, &str)] = &[("Attribute", "Attributes", "Name"), ("Tag", "Tags", "Key")];
/// Parameters whose numbered items are typed message attributes.
const TYPED: &[(&str, &str)] = &[
    ("MessageAttribute", "MessageAttributes"),
    ("MessageSystemAttribute", "MessageSystemAttributes"),
];
/// The fields of a typed attribute's `Value`.
const TYPED_FIELDS: &[&str] = &["DataType", "StringValue", "BinaryValue"];
/// Parameters that are integers in the JSON protocol.
const INTEGERS: &[&str] = &[
    "DelaySeconds",
    "MaxNumberOfMessages",
    "MaxResults",
    "VisibilityTimeout",
    "WaitTimeSeconds",
];

/// A typed attribute being assembled.
#[derive(Default)]
struct Typed {
    name: Option<String>,
    value: Map<String, Value>,
}

/// Key/value items of one numbered collection, by index.
type PairItems = BTreeMap<u64, (Option<String>, Option<String>)>;

/// The members of one document (the request, or one batch entry), each
/// numbered collection kept by index until it is complete.
#[derive(Default)]
struct Members {
    scalars: Map<String, Value>,
    lists: BTreeMap<&'static str, BTreeMap<u64, String>>,
    pairs: BTreeMap<&'static str, PairItems>,
    typed: BTreeMap<&'static str, BTreeMap<u64, Typed>>,
}

impl Members {
    /// Places one parameter, its name already split; names of no known
    /// shape are ignored, as unknown parameters are.
    fn place(&mut self, parts: &[&str], value: &str) -> Result<(), ApiError> {
        fn index(n: &str) -> Option<u64> {
            n.parse().ok()
        }
        match parts {
            [name] => {
                self.scalars
                    .insert(name.to_string(), parameter_value(name, value)?);
            }
            [list, n] => {
                if let (Some((_, member)), Some(i)) =
                    (LISTS.iter().find(|(p, _)| p == list), index(n))
                {
                    self.lists
                        .entry(*member)
                        .or_default()
                        .insert(i, value.to_string());
                }
            }
            [map, n, field] if PAIRS.iter().any(|(p, _, _)| p == map) => {
                let (Some((_, member, key)), Some(i)) =
                    (PAIRS.iter().find(|(p, _, _)| p == map), index(n))
                else {
                    return Ok(());
                };
                let slot = self.pairs.entry(*member).or_default().entry(i).or_default();
                if field == key {
                    slot.0 = Some(value.to_string());
                } else if *field == "Value" {
                    slot.1 = Some(value.to_string());
                }
            }
            [attr, n, "Name"] => {
                if let (Some((_, member)), Some(i)) =
                    (TYPED.iter().find(|(p, _)| p == attr), index(n))
                {
                    let slot = self.typed.entry(*member).or_default().entry(i).or_default();
                    slot.name = Some(value.to_string());
                }
            }
            [attr, n, "Value", field] if TYPED_FIELDS.contains(field) => {
                if let (Some((_, member)), Some(i)) =
                    (TYPED.iter().find(|(p, _)| p == attr), index(n))
                {
                    let slot = self.typed.entry(*member).or_default().entry(i).or_default();
                    slot.value
                        .insert(field.to_string(), Value::String(value.to_string()));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn into_document(self) -> Map<String, Value> {
        let mut doc = self.scalars;
        for (member, items) in self.lists {
            let list = items.into_values().map(Value::String).collect();
            doc.insert(member.to_string(), Value::Array(list));
        }
        for (member, items) in self.pairs {
            let map = items
                .into_values()
                .filter_map(|(k, v)| Some((k?, Value::String(v?))))
                .collect();
            doc.insert(member.to_string(), Value::Object(map));
        }
        for (member, items) in self.typed {
            let map = items
                .into_values()
                .filter_map(|t| Some((t.name?, Value::Object(t.value))))
                .collect();
            doc.insert(member.to_string(), Value::Object(map));
        }
        doc
    }
}

/// A scalar parameter as the JSON protocol would carry it: integers as
/// numbers (refused when they are not), everything else as text.
fn parameter_value(name: &str, value: &str) -> Result<Value, ApiError> {
    if !INTEGERS.contains(&name) {
        return Ok(Value::String(value.to_string()));
    }
    match value.trim().parse::<i64>() {
        Ok(n) => Ok(Value::from(n)),
        Err(_) => Err(ApiError::invalid_parameter(format!(
            "Value {} for parameter {name} is invalid. Reason: must be an integer.",
            super::error::echo(value)
        ))),
    }
}

/// The JSON-protocol document for a flattened parameter set, built in one
/// pass without recursion: names deeper than [`MAX_NAME_PARTS`] are refused.
pub fn to_document(pairs: &[(String, String)]) -> Result<Map<String, Value>, ApiError> {
    let mut top = Members::default();
    let mut entries: BTreeMap<u64, Members> = BTreeMap::new();
    let mut parts: Vec<&str> = Vec::with_capacity(MAX_NAME_PARTS);
    for (k, v) in pairs {
        if k == "Action" || k == "Version" {
            continue;
        }
        parts.clear();
        for part in k.split('.') {
            if parts.len() == MAX_NAME_PARTS {
                return Err(ApiError::malformed(format!(
                    "Parameter name {} has more than {MAX_NAME_PARTS} parts.",
                    super::error::echo(k)
                )));
            }
            parts.push(part);
        }
        match parts.as_slice() {
            [entry, n, rest @ ..] if entry.ends_with("BatchRequestEntry") && !rest.is_empty() => {
                if let Ok(i) = n.parse::<u64>() {
                    entries.entry(i).or_default().place(rest, v)?;
                }
            }
            all => top.place(all, v)?,
        }
    }
    let mut doc = top.into_document();
    if !entries.is_empty() {
        let list = entries
            .into_values()
            .map(|e| Value::Object(e.into_document()))
            .collect();
        doc.insert("Entries".into(), Value::Array(list));
    }
    Ok(doc)
}

/// Text escaped for XML; CR is kept as a character reference so that a
/// parser does not fold it into LF.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
    out
}

fn element(out: &mut String, name: &str, text: &str) {
    out.push_str(&format!("<{name}>{}</{name}>", escape(text)));
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn name_values(out: &mut String, wrapper: &str, key: &str, map: &Value) {
    if let Value::Object(m) = map {
        for (k, v) in m {
            out.push_str(&format!("<{wrapper}>"));
            element(out, key, k);
            element(out, "Value", &scalar(v));
            out.push_str(&format!("</{wrapper}>"));
        }
    }
}

fn fields(out: &mut String, action: &str, doc: &Map<String, Value>) {
    for (k, v) in doc {
        match (k.as_str(), v) {
            ("QueueUrls", Value::Array(urls)) => {
                urls.iter()
                    .for_each(|u| element(out, "QueueUrl", &scalar(u)));
            }
            ("Attributes", _) => name_values(out, "Attribute", "Name", v),
            ("Tags", _) => name_values(out, "Tag", "Key", v),
            ("MessageAttributes", Value::Object(m)) => {
                for (name, a) in m {
                    out.push_str("<MessageAttribute>");
                    element(out, "Name", name);
                    out.push_str("<Value>");
                    if let Value::Object(a) = a {
                        for (f, x) in a {
                            element(out, f, &scalar(x));
                        }
                    }
                    out.push_str("</Value></MessageAttribute>");
                }
            }
            ("Messages", Value::Array(list)) => {
                for m in list.iter().filter_map(Value::as_object) {
                    out.push_str("<Message>");
                    fields(out, action, m);
                    out.push_str("</Message>");
                }
            }
            ("Successful", Value::Array(list)) => {
                let tag = format!("{action}ResultEntry");
                for e in list.iter().filter_map(Value::as_object) {
                    out.push_str(&format!("<{tag}>"));
                    fields(out, action, e);
                    out.push_str(&format!("</{tag}>"));
                }
            }
            ("Failed", Value::Array(list)) => {
                for e in list.iter().filter_map(Value::as_object) {
                    out.push_str("<BatchResultErrorEntry>");
                    fields(out, action, e);
                    out.push_str("</BatchResultErrorEntry>");
                }
            }
            (_, Value::Null) => {}
            (name, value) => element(out, name, &scalar(value)),
        }
    }
}

/// The XML answer to a successful action.
pub fn to_xml(action: &str, result: &Value, request_id: &str) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\"?><{action}Response xmlns=\"http://queue.amazonaws.com/doc/2012-11-05/\">"
    );
    let empty = Map::new();
    let doc = result.as_object().unwrap_or(&empty);
    if !doc.is_empty() {
        out.push_str(&format!("<{action}Result>"));
        fields(&mut out, action, doc);
        out.push_str(&format!("</{action}Result>"));
    }
    out.push_str(&format!(
        "<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
    ));
    out
}

/// The XML answer to a failed action.
pub fn error_xml(e: &ApiError, request_id: &str) -> String {
    let mut out = String::from("<?xml version=\"1.0\"?><ErrorResponse xmlns=\"http://queue.amazonaws.com/doc/2012-11-05/\"><Error>");
    element(
        &mut out,
        "Type",
        if e.sender { "Sender" } else { "Receiver" },
    );
    element(&mut out, "Code", e.code);
    element(&mut out, "Message", &e.message);
    out.push_str("<Detail/></Error>");
    element(&mut out, "RequestId", request_id);
    out.push_str("</ErrorResponse>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(pairs: &[(&str, &str)]) -> Value {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Value::Object(to_document(&pairs).expect("a valid parameter set"))
    }

    #[test]
    fn flattened_parameters_become_documents() {
        let d = doc(&[
            ("Action", "SendMessageBatch"),
            ("QueueUrl", "http://x/1/q"),
            ("SendMessageBatchRequestEntry.2.Id", "b"),
            ("SendMessageBatchRequestEntry.2.MessageBody", "second"),
            ("SendMessageBatchRequestEntry.1.Id", "a"),
            ("SendMessageBatchRequestEntry.1.MessageBody", "first"),
            (
                "SendMessageBatchRequestEntry.1.MessageAttribute.1.Name",
                "color",
            ),
            (
                "SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType",
                "String",
            ),
            (
                "SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue",
                "blue",
            ),
        ]);
        assert_eq!(doc_str(&d, "/QueueUrl"), "http://x/1/q");
        assert_eq!(doc_str(&d, "/Entries/0/Id"), "a");
        assert_eq!(doc_str(&d, "/Entries/1/MessageBody"), "second");
        assert_eq!(
            doc_str(&d, "/Entries/0/MessageAttributes/color/StringValue"),
            "blue"
        );

        let d = doc(&[
            ("AttributeName.1", "All"),
            ("Attribute.1.Name", "VisibilityTimeout"),
            ("Attribute.1.Value", "5"),
            ("Tag.1.Key", "team"),
            ("Tag.1.Value", "core"),
        ]);
        assert_eq!(d["AttributeNames"], serde_json::json!(["All"]));
        assert_eq!(doc_str(&d, "/Attributes/VisibilityTimeout"), "5");
        assert_eq!(doc_str(&d, "/Tags/team"), "core");
    }

    #[test]
    fn deep_long_and_numerous_names_are_refused_not_recursed() {
        // 16 KB: the request that used to overflow the stack.
        let body = format!("Action=ListQueues&{}a=1", "a.".repeat(8000));
        let mut pairs = Vec::new();
        decode_form(body.as_bytes(), &mut pairs).expect("two parameters");
        let e = to_document(&pairs).expect_err("too deep");
        assert_eq!(e.status, 400);
        assert!(e.message.len() < 400, "the name is echoed cut");

        let many = "a=1&".repeat(MAX_PARAMETERS + 1);
        let mut pairs = Vec::new();
        assert!(decode_form(many.as_bytes(), &mut pairs).is_err());
        assert!(pairs.len() <= MAX_PARAMETERS);

        let d = doc(&[("A.B.C.D.E.F.G.H", "deepest allowed, ignored")]);
        assert_eq!(d, serde_json::json!({}));
    }

    #[test]
    fn integers_become_numbers_and_non_integers_are_refused() {
        let d = doc(&[("MaxNumberOfMessages", "10"), ("QueueUrl", "7")]);
        assert_eq!(
            d,
            serde_json::json!({"MaxNumberOfMessages": 10, "QueueUrl": "7"})
        );
        let pairs = vec![("WaitTimeSeconds".to_string(), "soon".to_string())];
        assert_eq!(
            to_document(&pairs).map_err(|e| e.code),
            Err("InvalidParameterValue")
        );
    }

    fn doc_str<'a>(d: &'a Value, ptr: &str) -> &'a str {
        d.pointer(ptr)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{ptr} missing in {d}"))
    }

    #[test]
    fn xml_escapes_what_would_change_meaning() {
        assert_eq!(escape("a<b>&\"'\r\n"), "a&lt;b&gt;&amp;&quot;&apos;&#xD;\n");
        let xml = to_xml(
            "ReceiveMessage",
            &serde_json::json!({"Messages": [{"MessageId": "m", "Body": "<x>",
                "Attributes": {"SentTimestamp": "1"}}]}),
            "r",
        );
        assert!(!xml.contains("<Attributes>"));
        assert!(xml.contains("<Attribute><Name>SentTimestamp</Name><Value>1</Value></Attribute>"));
        assert!(xml.contains("<Body>&lt;x&gt;</Body>"));
    }
}
