//! Auth: API key format and the key cache the proxy authenticates from
//! (K1, K4, K5). A key is `tgk_` plus 256 random bits in hex; only its
//! SHA-256 is stored. Sessions and passwords live in `accounts`.

pub mod cache;
pub mod keys;

pub use cache::{KeyCache, KeyEntry};
pub use keys::KeyOwner;

use crate::ids;

/// Every API key starts with this, so leaked keys are easy to scan for.
pub const KEY_PREFIX: &str = "tgk_";

/// Characters of a key shown in listings (`tgk_` + 8 hex).
pub const DISPLAY_PREFIX_LEN: usize = 12;

/// A freshly minted key: the full secret (shown once) and its hash.
pub struct NewKey {
    pub secret: String,
    pub hash_hex: String,
    pub prefix: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NewKey({}…)", self.prefix)
    }
}

pub fn mint_key() -> NewKey {
    let secret = ids::new_secret(KEY_PREFIX);
    NewKey {
        hash_hex: ids::sha256_hex(secret.as_bytes()),
        prefix: secret[..DISPLAY_PREFIX_LEN].to_string(),
        secret,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing API key")]
    Missing,
    #[error("invalid API key")]
    Unknown,
    #[error("API key archived")]
    Archived,
    #[error("key store unavailable")]
    Unavailable,
}
