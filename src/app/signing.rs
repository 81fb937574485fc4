//! Proof for the application that a POST came from this daemon.
//!
//! With keys configured, every POST carries
//! `X-Sqsd-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`: one
//! HMAC-SHA256 per key over `<t>.<X-Aws-Sqsd-Msgid>.<body>`, the body
//! exactly as sent. One `v1=` per key lets keys be rotated without a window
//! in which the application refuses good POSTs. With a token configured,
//! every POST also carries `Authorization: Bearer <token>`.
//!
//! The [`Signer`] owns the keys; a reload (SIGHUP) swaps the whole set at
//! once, so no POST is signed with half of an old set and half of a new
//! one. Keys never leave this module: not in `Debug`, logs or errors.

use std::sync::{Arc, RwLock};

use hmac::{Hmac, Mac};
use http::HeaderValue;
use sha2::Sha256;

/// The signature header, as sent (header names are case-insensitive).
pub const SIGNATURE_HEADER: &str = "x-sqsd-signature";

/// The keys POSTs are signed with, replaceable while the daemon runs.
pub struct Signer {
    keys: RwLock<Arc<Vec<Vec<u8>>>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({} keys)", self.key_count())
    }
}

impl Signer {
    /// A signer with `keys` (none: POSTs go unsigned).
    pub fn new(keys: Vec<Vec<u8>>) -> Signer {
        Signer {
            keys: RwLock::new(Arc::new(keys)),
        }
    }

    /// Swaps in a new set of keys; POSTs signed from now on use only these.
    pub fn replace(&self, keys: Vec<Vec<u8>>) {
        let keys = Arc::new(keys);
        match self.keys.write() {
            Ok(mut current) => *current = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }

    pub fn key_count(&self) -> usize {
        self.current().len()
    }

    fn current(&self) -> Arc<Vec<Vec<u8>>> {
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The `X-Sqsd-Signature` value for a POST made at `t` (unix seconds)
    /// of message `msgid` (the `X-Aws-Sqsd-Msgid` value as sent) with
    /// `body`; `None` without keys.
    pub fn sign(&self, t: i64, msgid: &[u8], body: &[u8]) -> Option<HeaderValue> {
        let keys = self.current();
        if keys.is_empty() {
            return None;
        }
        let mut value = format!("t={t}");
        for key in keys.iter() {
            value.push_str(",v1=");
            value.push_str(&signature(key, t, msgid, body));
        }
        // Digits, letters, `=` and `,` only.
        HeaderValue::from_str(&value).ok()
    }
}

/// Hex HMAC-SHA256 with `key` over `<t>.<msgid>.<body>`.
pub fn signature(key: &[u8], t: i64, msgid: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; the configuration insists on 32 bytes.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(msgid);
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// `Bearer <token>`, marked sensitive so that no `Debug` output shows it;
/// `None` for a token that cannot be a header value (the configuration
/// only accepts visible ASCII).
pub fn bearer(token: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &[u8] = b"0123456789abcdef0123456789abcdef";
    const KEY_B: &[u8] = b"fedcba9876543210fedcba9876543210";

    #[test]
    fn signature_matches_pythons_hmac() {
        // Computed with Python's standard library:
        // hmac.new(KEY_A, b'1700000000.m-1.{"a":1}', hashlib.sha256).hexdigest()
        assert_eq!(
            signature(KEY_A, 1_700_000_000, b"m-1", b"{\"a\":1}"),
            "8961949615b64f05402a712afaaca43fc3d7db8cb32ff797714e78ab6c24a5ce"
        );
    }

    #[test]
    fn one_v1_per_key_in_key_order() {
        let signer = Signer::new(vec![KEY_A.to_vec(), KEY_B.to_vec()]);
        let value = signer.sign(1_700_000_000, b"m-1", b"body").unwrap();
        let expected = format!(
            "t=1700000000,v1={},v1={}",
            signature(KEY_A, 1_700_000_000, b"m-1", b"body"),
            signature(KEY_B, 1_700_000_000, b"m-1", b"body")
        );
        assert_eq!(value.to_str().unwrap(), expected);
    }

    #[test]
    fn no_keys_no_header_and_replace_swaps_the_set() {
        let signer = Signer::new(Vec::new());
        assert!(signer.sign(1, b"m", b"").is_none());
        signer.replace(vec![KEY_B.to_vec()]);
        let value = signer.sign(1, b"m", b"").unwrap();
        assert_eq!(
            value.to_str().unwrap(),
            format!("t=1,v1={}", signature(KEY_B, 1, b"m", b""))
        );
        assert_eq!(signer.key_count(), 1);
    }

    #[test]
    fn debug_never_shows_a_key_or_the_token() {
        let signer = Signer::new(vec![KEY_A.to_vec()]);
        let shown = format!("{signer:?}");
        assert_eq!(shown, "Signer(1 keys)");
        let token = bearer("s3cret-token").unwrap();
        assert!(!format!("{token:?}").contains("s3cret"));
        assert_eq!(token.as_bytes(), b"Bearer s3cret-token");
    }
}
