//! The Query protocol: form-encoded parameters with flattened, numbered
//! names (`Attribute.1.Name`, `MessageAttribute.2.Value.StringValue`,
//! `SendMessageBatchRequestEntry.3.Id`) become the JSON protocol's documents,
//! and results become the XML that older SDKs parse.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::error::ApiError;

/// `a=1&b=x+y` into pairs, percent-decoded.
pub fn decode_form(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[derive(Debug, Default)]
struct Node {
    value: Option<String>,
    children: BTreeMap<String, Node>,
}

impl Node {
    fn insert(&mut self, path: &[&str], value: &str) {
        match path.split_first() {
            None => self.value = Some(value.to_string()),
            Some((head, rest)) => self
                .children
                .entry(head.to_string())
                .or_default()
                .insert(rest, value),
        }
    }

    /// Children keyed by number, in numeric order.
    fn numbered(&self) -> Vec<&Node> {
        let mut items: Vec<(u64, &Node)> = self
            .children
            .iter()
            .filter_map(|(k, n)| Some((k.parse().ok()?, n)))
            .collect();
        items.sort_by_key(|(i, _)| *i);
        items.into_iter().map(|(_, n)| n).collect()
    }

    fn text(&self, key: &str) -> Option<String> {
        self.children.get(key).and_then(|n| n.value.clone())
    }
}

/// The JSON-protocol document for a flattened parameter set.
pub fn to_document(pairs: &[(String, String)]) -> Map<String, Value> {
    let mut root = Node::default();
    for (k, v) in pairs {
        if k == "Action" || k == "Version" {
            continue;
        }
        let path: Vec<&str> = k.split('.').collect();
        root.insert(&path, v);
    }
    convert(&root)
}

fn convert(node: &Node) -> Map<String, Value> {
    let mut doc = Map::new();
    for (name, child) in &node.children {
        let (key, value) = match name.as_str() {
            "AttributeName" => ("AttributeNames", strings(child)),
            "MessageAttributeName" => ("MessageAttributeNames", strings(child)),
            "MessageSystemAttributeName" => ("MessageSystemAttributeNames", strings(child)),
            "TagKey" => ("TagKeys", strings(child)),
            "Attribute" => ("Attributes", pairs_map(child, "Name", "Value")),
            "Tag" => ("Tags", pairs_map(child, "Key", "Value")),
            "MessageAttribute" => ("MessageAttributes", typed_map(child)),
            "MessageSystemAttribute" => ("MessageSystemAttributes", typed_map(child)),
            n if n.ends_with("BatchRequestEntry") => (
                "Entries",
                Value::Array(
                    child
                        .numbered()
                        .into_iter()
                        .map(|e| Value::Object(convert(e)))
                        .collect(),
                ),
            ),
            other => match &child.value {
                Some(v) => {
                    doc.insert(other.to_string(), Value::String(v.clone()));
                    continue;
                }
                None => (other, Value::Object(convert(child))),
            },
        };
        doc.insert(key.to_string(), value);
    }
    doc
}

fn strings(node: &Node) -> Value {
    Value::Array(
        node.numbered()
            .into_iter()
            .filter_map(|n| n.value.clone().map(Value::String))
            .collect(),
    )
}

fn pairs_map(node: &Node, key: &str, value: &str) -> Value {
    let mut m = Map::new();
    for n in node.numbered() {
        if let (Some(k), Some(v)) = (n.text(key), n.text(value)) {
            m.insert(k, Value::String(v));
        }
    }
    Value::Object(m)
}

fn typed_map(node: &Node) -> Value {
    let mut m = Map::new();
    for n in node.numbered() {
        let (Some(name), Some(v)) = (n.text("Name"), n.children.get("Value")) else {
            continue;
        };
        let mut attr = Map::new();
        for field in ["DataType", "StringValue", "BinaryValue"] {
            if let Some(x) = v.text(field) {
                attr.insert(field.to_string(), Value::String(x));
            }
        }
        m.insert(name, Value::Object(attr));
    }
    Value::Object(m)
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
        Value::Object(to_document(&pairs))
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
