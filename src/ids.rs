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
        format!("req_{:016x}{:x}", self.nonce, n)
    }
}
