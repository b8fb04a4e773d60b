//! Accounts: users, sessions and personal keys (A1-A3, K1, K2, K4, K5).
//! Passwords are Argon2id hashes; session tokens and API keys are stored
//! only as SHA-256 hashes. Nothing here speaks HTTP; the API maps
//! `AccountError` to status codes in one place (api/error.rs).

pub mod rules;
pub mod users;

pub use users::{AccountError, Accounts};
