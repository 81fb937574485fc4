//! AWS's documented rules for what callers name and send: message
//! attribute names, data types and Number values, FIFO group and
//! deduplication ids, and boolean queue attributes. Each check answers with
//! the error AWS gives, the caller's value echoed cut.

use super::error::{echo, ApiError};

/// Longest message attribute name and data type.
pub const MAX_ATTRIBUTE_NAME: usize = 256;
/// Longest FIFO message group or deduplication id.
pub const MAX_FIFO_ID: usize = 128;
/// Most significant digits of a Number attribute.
const MAX_NUMBER_DIGITS: usize = 38;
/// Number attributes lie between 10^-128 and 10^126 in magnitude (or are 0).
const MIN_NUMBER_EXPONENT: i64 = -128;
const MAX_NUMBER_EXPONENT: i64 = 126;

/// A message attribute name: `A-Z a-z 0-9 _ - .`, 1 to 256 characters, no
/// period first, last or twice in a row, not starting with `AWS.` or
/// `Amazon.` in any case.
pub fn attribute_name(name: &str) -> Result<(), ApiError> {
    let bad = |why: &str| {
        Err(ApiError::invalid_parameter(format!(
            "Message (user) attribute name '{}' is invalid. Reason: {why}",
            echo(name)
        )))
    };
    if name.is_empty() || name.len() > MAX_ATTRIBUTE_NAME {
        return bad("Message (user) attribute names must be 1 to 256 characters long.");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if !name.chars().all(allowed) {
        return bad("Message (user) attribute names can only contain alphanumeric characters, hyphens, underscores and periods.");
    }
    if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        return bad("Message (user) attribute names cannot start or end with a period or have two periods in a row.");
    }
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("aws.") || lower.starts_with("amazon.") {
        return bad("You can't use message attribute names beginning with 'AWS.' or 'Amazon.'. These strings are reserved for internal use.");
    }
    Ok(())
}

/// A data type: `String`, `Number` or `Binary`, optionally with a custom
/// label after a period, 256 characters at most. Returns the base type.
pub fn data_type<'a>(name: &str, data_type: &'a str) -> Result<&'a str, ApiError> {
    let base = data_type.split('.').next().unwrap_or("");
    if data_type.len() > MAX_ATTRIBUTE_NAME {
        return Err(ApiError::invalid_parameter(format!(
            "Message (user) attribute '{}' type must be at most {MAX_ATTRIBUTE_NAME} characters long.",
            echo(name)
        )));
    }
    if !matches!(base, "String" | "Number" | "Binary") {
        return Err(ApiError::invalid_parameter(format!(
            "The type of message (user) attribute '{}' is invalid. You must use only the following supported type prefixes: Binary, Number, String.",
            echo(name)
        )));
    }
    Ok(base)
}

/// A Number attribute's value: a decimal number with an optional sign,
/// fraction and exponent, at most 38 significant digits, between 10^-128
/// and 10^126 in magnitude (zero allowed).
pub fn number(name: &str, text: &str) -> Result<(), ApiError> {
    if number_in_range(text) {
        return Ok(());
    }
    Err(ApiError::invalid_parameter(format!(
        "Can't cast the value of message (user) attribute '{}' to a number: {}. Numbers can have up to 38 digits of precision and lie between 10^-128 and 10^126.",
        echo(name),
        echo(text)
    )))
}

fn number_in_range(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return false;
            }
            match e.parse::<i64>() {
                Ok(n) => (m, n),
                Err(_) => return false,
            }
        }
        None => (unsigned, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.len() + frac.len() == 0 || !all_digits(int) || !all_digits(frac) {
        return false;
    }
    // Significant digits, leading and trailing zeros trimmed.
    let digits: String = format!("{int}{frac}");
    let lead = digits.bytes().take_while(|b| *b == b'0').count();
    let significant = digits[lead..].trim_end_matches('0');
    if significant.is_empty() {
        return true; // zero
    }
    if significant.len() > MAX_NUMBER_DIGITS {
        return false;
    }
    // Value = 0.d1d2... x 10^(int digits after the leading zeros + exponent),
    // so its decimal magnitude is that power minus one.
    let point = int.len() as i64 - lead as i64;
    let magnitude = point - 1 + exponent;
    let exact_power_of_ten = significant == "1";
    magnitude >= MIN_NUMBER_EXPONENT
        && (magnitude < MAX_NUMBER_EXPONENT
            || (magnitude == MAX_NUMBER_EXPONENT && exact_power_of_ten))
}

/// A FIFO `MessageGroupId` or `MessageDeduplicationId`: 1 to 128
/// characters, letters, digits and ASCII punctuation only.
pub fn fifo_id(parameter: &str, id: &str) -> Result<(), ApiError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c.is_ascii_punctuation();
    if !id.is_empty() && id.len() <= MAX_FIFO_ID && id.chars().all(allowed) {
        return Ok(());
    }
    Err(ApiError::invalid_parameter(format!(
        "Value {} for parameter {parameter} is invalid. Reason: {parameter} can only include alphanumeric and punctuation characters. 1 to 128 in length.",
        echo(id)
    )))
}

/// A boolean queue attribute: `true` or `false`, in any case.
pub fn boolean(attribute: &str, value: &str) -> Result<bool, ApiError> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(ApiError::invalid_attribute_value(format!(
            "Invalid value for the parameter {attribute}."
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_at_the_edges_of_the_range() {
        for ok in ["1e126", "-1e126", "1e-128", "0.1e-127", "10e125", "0e999"] {
            assert!(number_in_range(ok), "{ok}");
        }
        for bad in ["1.1e126", "10e126", "0.1e-128", "1e-129", "9.9e-129", "."] {
            assert!(!number_in_range(bad), "{bad}");
        }
    }
}
