//! AIP-158 paging: page sizes and opaque keyset page tokens.
//!
//! A token carries the sort key and id of the last row returned and a
//! fingerprint of the request parameters it belongs to; reusing it with
//! different parameters is INVALID_ARGUMENT.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use patron_domain::ApiError;
use serde::{Deserialize, Serialize};

/// The position after the last row of a page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The sort key of the last row, rendered as text ("" when sorting by id).
    #[serde(rename = "k")]
    pub key: String,
    #[serde(rename = "i")]
    pub id: String,
}

#[derive(Serialize, Deserialize)]
struct Token {
    #[serde(rename = "c")]
    cursor: Cursor,
    #[serde(rename = "f")]
    fingerprint: u64,
}

/// FNV-1a over the parts, stable across processes and versions.
pub fn fingerprint(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0xff)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

pub fn encode(cursor: Cursor, fingerprint: u64) -> String {
    let json = serde_json::to_vec(&Token {
        cursor,
        fingerprint,
    })
    .unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// The token for the page after one ending at `last_id` when more rows
/// follow (`more`), for lists ordered by id alone; "" on the last page.
pub fn next_by_id(more: bool, last_id: Option<&str>, fingerprint: u64) -> String {
    match last_id {
        Some(id) if more => encode(
            Cursor {
                key: String::new(),
                id: id.to_owned(),
            },
            fingerprint,
        ),
        _ => String::new(),
    }
}

/// Decodes `token` issued for a request with this `fingerprint`.
pub fn decode(token: &str, fingerprint: u64) -> Result<Option<Cursor>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || ApiError::invalid_field("page_token", "is not a valid page token");
    let bytes = URL_SAFE_NO_PAD
        .decode(token.as_bytes())
        .map_err(|_| invalid())?;
    let token: Token = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if token.fingerprint != fingerprint {
        return Err(ApiError::invalid_field(
            "page_token",
            "belongs to a request with other parameters (filter, order_by or parent)",
        ));
    }
    Ok(Some(token.cursor))
}

/// `page_size`: 0 means `default`, above `max` is coerced to `max`, negative is invalid.
pub fn page_size(requested: i32, default: u64, max: u64) -> Result<u64, ApiError> {
    match requested {
        n if n < 0 => Err(ApiError::invalid_field("page_size", "must not be negative")),
        0 => Ok(default),
        n => Ok((n as u64).min(max)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_mismatch() {
        let cursor = Cursor {
            key: "2026-01-01".into(),
            id: "abc".into(),
        };
        let fp = fingerprint(&["region = x", "create_time"]);
        let token = encode(cursor.clone(), fp);
        assert_eq!(decode(&token, fp).unwrap(), Some(cursor));
        let other = fingerprint(&["region = y", "create_time"]);
        assert_eq!(
            decode(&token, other).unwrap_err().violations[0].field,
            "page_token"
        );
        assert!(decode("not a token!", fp).is_err());
        assert_eq!(decode("", fp).unwrap(), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(page_size(0, 50, 1000).unwrap(), 50);
        assert_eq!(page_size(5000, 50, 1000).unwrap(), 1000);
        assert!(page_size(-1, 50, 1000).is_err());
    }

    #[test]
    fn fingerprint_separates_parts() {
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
    }

    proptest::proptest! {
        /// A client can send any token: it decodes or is INVALID_ARGUMENT
        /// on `page_token`, never a panic.
        #[test]
        fn any_token_is_a_cursor_or_a_page_token_violation(token in "\\PC{0,200}", fp: u64) {
            if let Err(e) = decode(&token, fp) {
                proptest::prop_assert_eq!(&e.violations[0].field, "page_token");
            }
        }

        /// Tokens that look like ours (base64 of near-JSON) too.
        #[test]
        fn forged_tokens_are_rejected_cleanly(json in r#"\{"c":\{"k":"[a-z0-9]{0,8}","i":"[a-z0-9]{0,8}"\},"f":-?[0-9]{1,22}\}?"#, fp: u64) {
            let token = URL_SAFE_NO_PAD.encode(json.as_bytes());
            let _ = decode(&token, fp);
        }

        #[test]
        fn every_cursor_round_trips(key in "\\PC{0,40}", id in "\\PC{0,40}", fp: u64) {
            let cursor = Cursor { key, id };
            proptest::prop_assert_eq!(decode(&encode(cursor.clone(), fp), fp).unwrap(), Some(cursor));
        }
    }
}
