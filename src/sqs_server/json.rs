//! Request bodies of the JSON protocol, bounded before they are parsed: a
//! body nests and counts values far beyond any real request only to cost
//! memory and CPU, so such bodies are refused after one linear scan.

use serde_json::{Map, Value};

use super::error::ApiError;

/// Deepest nesting accepted. A real request nests at most five deep
/// (`{"Entries": [{"MessageAttributes": {"n": {...}}}]}`).
pub const MAX_DEPTH: usize = 16;
/// Most values (objects, arrays, members, items) in one body. A real
/// request has a few hundred at most.
pub const MAX_VALUES: usize = 10_000;

/// The request document of a JSON-protocol body: an object, within
/// [`MAX_DEPTH`] and [`MAX_VALUES`]. An empty body is an empty request.
pub fn parse_request(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    check_shape(body)?;
    match serde_json::from_slice(body) {
        Ok(Value::Object(doc)) => Ok(doc),
        Ok(_) => Err(ApiError::malformed(
            "The request body must be a JSON object.",
        )),
        Err(e) => Err(ApiError::malformed(format!("Malformed JSON: {e}"))),
    }
}

/// Counts nesting and values outside strings, without building anything.
/// Malformed text passes here and is refused by the parser.
fn check_shape(body: &[u8]) -> Result<(), ApiError> {
    let (mut depth, mut values) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                values += 1;
                if depth > MAX_DEPTH {
                    return Err(ApiError::malformed(format!(
                        "The request nests deeper than {MAX_DEPTH} levels."
                    )));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' => values += 1,
            _ => {}
        }
        if values > MAX_VALUES {
            return Err(ApiError::malformed(format!(
                "The request has more than {MAX_VALUES} values."
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_and_wide_bodies_are_refused_before_parsing() {
        for body in [
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
            format!("{{\"a\":{}1{}}}", "{\"a\":".repeat(200), "}".repeat(200)),
            format!("{{\"a\":[{}0]}}", "0,".repeat(MAX_VALUES)),
        ] {
            let e = parse_request(body.as_bytes()).expect_err("refused");
            assert_eq!((e.status, e.shape), (400, "SerializationException"));
        }
        // Brackets inside strings do not count.
        let text = format!(
            "{{\"MessageBody\": \"{}\\\"{}\"}}",
            "[".repeat(100),
            "{".repeat(100)
        );
        assert!(parse_request(text.as_bytes()).is_ok());
        let nested = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(
            parse_request(nested.as_bytes()).is_err(),
            "an array, not an object"
        );
        assert_eq!(parse_request(b" \n").map(|m| m.len()), Ok(0));
    }
}
