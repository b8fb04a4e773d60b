//! Accounts: users, sessions, personal keys, and teams (A1-A3, K1-K5,
//! T1-T4, I1-I5, L1-L3, D1, U1-U3). Passwords are Argon2id hashes; session
//! tokens, invite tokens and API keys are stored only as SHA-256 hashes.
//! Nothing here speaks HTTP; the API maps `AccountError` and `TeamError` to
//! status codes in one place (api/error.rs).
//!
//! - `users`: sign-up, login, sessions, personal keys (`Accounts`).
//! - `rules`: the role table as pure functions.
//! - `names`: what a team or key name may be (T2, K1a).
//! - `password_pool`: Argon2 checks bounded by cores and a queue (S1).
//! - `throttle`: failed logins per email and per client address (S1).
//! - `teams`: `Teams`, the team lifecycle (create, members, roles, leave,
//!   delete) and `TeamError`; the handle every team call goes through.
//! - `membership`: the membership change each money transfer applies
//!   (`wallet::transfer` moves the money) and leaving.
//! - `invites`: invite, list, revoke, accept, and the invite mail.
//! - `team_keys`: team keys (minted by `auth::keys`, like personal keys).
//! - `reports`: who reads which usage.
//! - `limits`: who sets which spend and rate limit (Q1, Q2).

pub mod invites;
pub mod limits;
pub mod membership;
pub mod names;
pub mod password_pool;
pub mod reports;
pub mod rules;
pub mod team_keys;
pub mod teams;
pub mod throttle;
pub mod users;

pub use invites::INVITE_TTL_DAYS;
pub use teams::{role_name, valid_team_name, TeamError, TeamView, Teams, MAX_TEAM_NAME};
pub use users::{AccountError, Accounts};
