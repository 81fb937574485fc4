//! The digests SQS returns so that SDKs can check what arrived:
//! `MD5OfMessageBody`, `MD5OfMessageAttributes` and
//! `MD5OfMessageSystemAttributes`, computed exactly as AWS documents.

use std::collections::BTreeMap;

use md5::{Digest, Md5};

use super::attr::Attr;

pub fn of_body(body: &str) -> String {
    hex::encode(Md5::digest(body.as_bytes()))
}

fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    buf.extend_from_slice(bytes);
}

/// Attributes sorted by name; each as length-prefixed name and data type, a
/// transport byte (1 string, 2 binary) and the length-prefixed value.
pub fn of_attributes(attrs: &BTreeMap<String, Attr>) -> Option<String> {
    if attrs.is_empty() {
        return None;
    }
    let mut buf = Vec::new();
    for (name, a) in attrs {
        put(&mut buf, name.as_bytes());
        put(&mut buf, a.data_type.as_bytes());
        match (&a.binary, &a.string) {
            (Some(b), _) => {
                buf.push(2);
                put(&mut buf, b);
            }
            (None, s) => {
                buf.push(1);
                put(&mut buf, s.as_deref().unwrap_or("").as_bytes());
            }
        }
    }
    Some(hex::encode(Md5::digest(&buf)))
}

/// The only system attribute a sender can set is AWSTraceHeader.
pub fn of_trace_header(value: &str) -> String {
    let attrs = BTreeMap::from([(
        "AWSTraceHeader".to_string(),
        Attr {
            data_type: "String".into(),
            string: Some(value.into()),
            binary: None,
        },
    )]);
    of_attributes(&attrs).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_digest_is_plain_md5() {
        assert_eq!(of_body(""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(of_body("hello"), "5d41402abc4b2a76b9719d911017c592");
    }

    #[test]
    fn attribute_digest_follows_the_documented_encoding() {
        let attrs = BTreeMap::from([(
            "a".to_string(),
            Attr {
                data_type: "String".into(),
                string: Some("b".into()),
                binary: None,
            },
        )]);
        // 00000001 'a' 00000006 'String' 01 00000001 'b'
        let mut expect = vec![0, 0, 0, 1, b'a', 0, 0, 0, 6];
        expect.extend_from_slice(b"String");
        expect.extend_from_slice(&[1, 0, 0, 0, 1, b'b']);
        assert_eq!(
            of_attributes(&attrs),
            Some(hex::encode(Md5::digest(&expect)))
        );
        assert_eq!(of_attributes(&BTreeMap::new()), None);
    }
}
