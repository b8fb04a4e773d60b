//! Identifiers and secrets: opaque random ids for records, request ids for
//! the proxy (a per-process random prefix plus a counter: unique across
//! restarts without a syscall per request), and secret tokens with their
//! SHA-256 hashes (the only form in which secrets are stored).

use std::sync::atomic::{AtomicU64, Ordering};

use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// `prefix` + 96 random bits in hex: record ids (users, keys, teams).
pub fn new_id(prefix: &str) -> String {
    let mut b = [0u8; 12];
    OsRng.fill_bytes(&mut b);
    format!("{prefix}_{}", hex::encode(b))
}

/// `prefix` + 256 random bits in hex: API keys, session and invite tokens.
pub fn new_secret(prefix: &str) -> String {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    format!("{prefix}{}", hex::encode(b))
}

/// SHA-256 of a secret, raw (the key cache's map key).
pub fn sha256(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// SHA-256 of a secret, hex (the store's form).
pub fn sha256_hex(secret: &[u8]) -> String {
    hex::encode(sha256(secret))
}

/// Request ids: a random per-process prefix and a counter.
pub struct RequestIds {
    nonce: u64,
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds {
            nonce: OsRng.next_u64(),
            next: AtomicU64::new(1),
        }
    }
}

impl RequestIds {
    /// A number unique within this process.
    pub fn next(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// The process prefix, so `(nonce, n)` is unique across restarts.
    pub fn nonce(&self) -> u64 {
        self.nonce
    }

    /// The `x-request-id` / ledger reference text of request `n`.
    pub fn format(&self, n: u64) -> String {
        let mut s = String::with_capacity(4 + 16 + 16);
        s.push_str("req_");
        push_hex(&mut s, self.nonce, 16);
        push_hex(&mut s, n, 1);
        s
    }
}

/// `v` in lower-case hex, zero-padded to `width` digits: what `{:0w$x}`
/// writes, without the formatting machinery (two of these on every
/// request cost ~2,800 instructions through `format!`).
pub fn push_hex(s: &mut String, v: u64, width: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digits = (16 - (v.leading_zeros() as usize) / 4).max(width).max(1);
    for i in (0..digits).rev() {
        let nibble = if i < 16 { (v >> (i * 4)) & 0xf } else { 0 };
        s.push(char::from(DIGITS[nibble as usize]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_matches_format() {
        for v in [0u64, 1, 0xf, 0x10, 0xdead_beef, u64::MAX, 1 << 63] {
            for width in [1usize, 16, 20] {
                let mut s = String::new();
                push_hex(&mut s, v, width);
                assert_eq!(s, format!("{v:0width$x}"), "{v} {width}");
            }
        }
        let ids = RequestIds::default();
        assert_eq!(ids.format(42), format!("req_{:016x}{:x}", ids.nonce(), 42));
    }
}
