//! A message attribute as a sender gave it: what the store keeps and what
//! the MD5 digest of attributes is computed over.

/// One message attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub data_type: String,
    pub string: Option<String>,
    pub binary: Option<Vec<u8>>,
}
