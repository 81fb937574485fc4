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

/// Longest path (with its query) a message may name.
pub const MAX_PATH_LEN: usize = 8 * 1024;

/// Why a per-message path was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("must start with /")]
    NotAbsolute,
    #[error("must not start with // or /\\ (that names another host)")]
    NetworkPath,
    #[error("must not contain spaces, backslashes or control characters")]
    BadCharacter,
    #[error("must not contain . or .. segments, plain or percent-encoded")]
    DotSegment,
    #[error("would leave the application's origin or base path")]
    OtherOrigin,
}

/// Checks that `path` can only ever be a path (and query) on the
/// application, below the base path it is joined to: no other host, no
/// control characters, no `.` or `..` segment in any spelling a server might
/// decode (`%2e`, `%2E%2e`, `..;`, `..%2f`, double encodings).
pub fn check_path(path: &str) -> Result<&str, PathError> {
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
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
    // Everything before the query: a `#` is sent percent-encoded as part of
    // the path, so dot segments after it count too.
    let path_part = path.split('?').next().unwrap_or("");
    if path_part.split('/').any(is_dot_segment) {
        return Err(PathError::DotSegment);
    }
    Ok(path)
}

/// Whether one raw path segment could mean "this" or "parent" to a server
/// that decodes it (up to three times), splits it again on `/` or `\`, or
/// drops `;` parameters.
fn is_dot_segment(segment: &str) -> bool {
    let mut text = segment.to_string();
    for _ in 0..4 {
        let dotty = text
            .split(['/', '\\'])
            .map(|part| part.split(';').next().unwrap_or(""))
            .any(|part| part == "." || part == "..");
        if dotty {
            return true;
        }
        let decoded: String = percent_decode(&text);
        if decoded == text {
            return false;
        }
        text = decoded;
    }
    true
}

/// One round of percent-decoding; invalid escapes and bytes that do not
/// form UTF-8 are kept as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A header value, or `None` when the text holds a character a header
/// value cannot carry: any control character but the horizontal tab (CR,
/// LF and NUL included). Non-ASCII UTF-8 is passed through as its bytes.
pub fn header_value(text: &str) -> Option<HeaderValue> {
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return None;
    }
    HeaderValue::from_bytes(text.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_refused_in_every_spelling() {
        for bad in [
            "/..",
            "/../admin",
            "/a/./b",
            "/a/..",
            "/%2e%2e/internal",
            "/%2E%2e/x",
            "/.%2e/x",
            "/%2e/x",
            "/..%2fadmin",
            "/..%5cadmin",
            "/..;/admin",
            "/%252e%252e/x",
            "/a/..?q=1",
            "/a#/../b",
            "/a#/./b",
        ] {
            assert_eq!(check_path(bad), Err(PathError::DotSegment), "{bad:?}");
        }
        for good in [
            "/",
            "/a/b",
            "/...",
            "/a..b",
            "/.well-known/x",
            "/%2F%2Fx",
            "/x?a=../b",
            "/a.b/c",
        ] {
            assert_eq!(check_path(good), Ok(good), "{good:?}");
        }
    }

    #[test]
    fn a_long_path_is_refused_for_its_length() {
        let long = format!("/{}", "a".repeat(100 * 1024));
        assert_eq!(check_path(&long), Err(PathError::TooLong));
        let long_and_bad = format!("x{}", "\n".repeat(100 * 1024));
        assert_eq!(check_path(&long_and_bad), Err(PathError::TooLong));
    }

    #[test]
    fn tabs_are_allowed_in_header_values_and_other_controls_are_not() {
        assert_eq!(header_value("a\tb").unwrap().as_bytes(), b"a\tb");
        for bad in ["a\rb", "a\nb", "a\0b", "a\u{7f}b", "a\u{1b}b"] {
            assert!(header_value(bad).is_none(), "{bad:?}");
        }
    }
}
