//! Secrets sqsd sends but never shows: the HMAC keys that sign each POST
//! and the application's bearer token. Errors describe a key by its
//! position and length only, never by its content.

use std::path::Path;

use super::limits::{self, FileError};

/// Reads a secret's file within `limit`, as a message for the setting.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    limits::read_bounded(path, limit).map_err(|e| match e {
        FileError::Unreadable(m) | FileError::Content(m) => m,
    })
}

/// Shortest signing key: HMAC-SHA256 is only as strong as its key.
pub const MIN_SIGNING_KEY_BYTES: usize = 32;
/// Most signing keys in all (each adds a `v1=` to every POST).
pub const MAX_SIGNING_KEYS: usize = 16;
/// Largest signing key file.
pub const MAX_SIGNING_KEY_FILE: u64 = 64 * 1024;
/// Largest token file.
pub const MAX_TOKEN_FILE: u64 = 8 * 1024;

/// The keys of a key file: one per line, blank lines and surrounding
/// whitespace ignored.
pub fn signing_keys_from_file(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let bytes = read_bounded(path, MAX_SIGNING_KEY_FILE)?;
    let keys: Vec<Vec<u8>> = bytes
        .split(|b| *b == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    if keys.is_empty() {
        return Err(format!("{} holds no key", path.display()));
    }
    if keys.len() > MAX_SIGNING_KEYS {
        return Err(format!(
            "{} holds {} keys: at most {MAX_SIGNING_KEYS} are allowed",
            path.display(),
            keys.len()
        ));
    }
    check_lengths(&keys, &format!("line {{}} of {}", path.display()))?;
    Ok(keys)
}

/// The keys of `SQSD_SIGNING_KEY`: comma-separated, surrounding whitespace
/// and empty items ignored.
pub fn signing_keys_from_env(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let keys: Vec<Vec<u8>> = text
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| k.as_bytes().to_vec())
        .collect();
    if keys.len() > MAX_SIGNING_KEYS {
        return Err(format!(
            "holds {} keys: at most {MAX_SIGNING_KEYS} are allowed",
            keys.len()
        ));
    }
    check_lengths(&keys, "key {}")?;
    Ok(keys)
}

/// `place` names where a key is, with `{}` standing for its number.
fn check_lengths(keys: &[Vec<u8>], place: &str) -> Result<(), String> {
    for (i, key) in keys.iter().enumerate() {
        if key.len() < MIN_SIGNING_KEY_BYTES {
            return Err(format!(
                "{} is {} bytes long: each signing key must be at least {MIN_SIGNING_KEY_BYTES} bytes (the key is not shown)",
                place.replace("{}", &(i + 1).to_string()),
                key.len()
            ));
        }
    }
    Ok(())
}

/// The token of a token file, trimmed: visible ASCII only, since it is sent
/// as `Authorization: Bearer <token>`.
pub fn app_token_from_file(path: &Path) -> Result<String, String> {
    let bytes = read_bounded(path, MAX_TOKEN_FILE).map_err(|e| {
        if e.contains("larger than") {
            format!("{e}: a token file holds one token")
        } else {
            e
        }
    })?;
    let token = bytes.trim_ascii();
    if token.is_empty() {
        return Err(format!("{} holds no token", path.display()));
    }
    if let Some(at) = token.iter().position(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "{}: the token must be one word of visible ASCII characters (byte {} is not; the token is not shown)",
            path.display(),
            at + 1
        ));
    }
    // Visible ASCII is valid UTF-8.
    Ok(String::from_utf8_lossy(token).into_owned())
}
