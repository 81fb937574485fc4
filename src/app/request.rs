//! What sqsd sends the application: one POST ([`Request`]) whose path can
//! only ever be a path on the configured application, and whose header
//! values can never carry control characters.

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue};

/// Everything needed to send one POST.
#[derive(Debug)]
pub struct Request {
    /// Full URL: the application base joined with the path.
    pub url: reqwest::Url,
    /// The same URL's path and query: what a plain-HTTP client sends.
    pub target: PathAndQuery,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why a per-message path was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("must start with /")]
    NotAbsolute,
    #[error("must not start with // or /\\ (that names another host)")]
    NetworkPath,
    #[error("must not contain spaces, backslashes or control characters")]
    BadCharacter,
    #[error("would leave the application's origin")]
    OtherOrigin,
}

/// Checks that `path` can only ever be a path (and query) on the application.
pub fn check_path(path: &str) -> Result<&str, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if path.starts_with("//") || path.starts_with("/\\") {
        return Err(PathError::NetworkPath);
    }
    if path
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    {
        return Err(PathError::BadCharacter);
    }
    Ok(path)
}

/// A header value, or `None` when the text holds any control character.
/// Non-ASCII UTF-8 is passed through as its bytes.
pub fn header_value(text: &str) -> Option<HeaderValue> {
    if text.chars().any(char::is_control) {
        return None;
    }
    HeaderValue::from_bytes(text.as_bytes()).ok()
}
