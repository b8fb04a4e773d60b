//! tollgate: a usage-metering gateway for OpenAI-compatible inference APIs.
//! API clients call models through it; it authenticates their key from
//! memory, holds the worst-case cost on the key's wallet, forwards the call,
//! reads the tokens used from the response as it passes, and settles the
//! exact cost. Wallets are prepaid: a team's pool or a user's own balance.
//!
//! # Layout
//! In the order a proxied request meets them:
//! - `server`: listeners and graceful shutdown; `run` and `start` live here;
//!   `connections` is the accept loop with S2's connection limit and header
//!   and idle deadlines.
//! - `app`: `App`, everything a handler can reach; `boot`; the one tracker
//!   of background tasks that `server::run` awaits on shutdown.
//! - `proxy`: THE HOT PATH, phase by phase (auth, gate, price, hold,
//!   forward, meter, settle, log): `proxy::request` reads the client's
//!   request, `proxy::upstream` is the upstream client behind one seam
//!   (the pure response framing in `proxy::upstream::wire`),
//!   `proxy::relay` passes the answer on as it arrives, `proxy::meter`
//!   reads usage from it (pure), `proxy::bill` settles it.
//! - `auth`: the API key format and the key cache the proxy reads;
//!   `auth::keys` is the one key-minting path, personal and team.
//! - `pricing`: USD per million tokens per model; cost and hold estimates.
//! - `limits`: what a cached key carries of its limits, the per-key rpm /
//!   tpm counters and the spend rules sent with each hold (Q1-Q3); the
//!   wallet actor decides spend limits with the hold (`wallet::limits`).
//! - `wallet`: one actor per wallet (`wallet::actor`, one method per
//!   message), the only writer of its balance, found through
//!   `wallet::registry`; the pure arithmetic in `wallet::ledger`;
//!   `wallet::transfer` moves money between wallets under a transfer id,
//!   with `recover` for the ones a crash interrupted.
//! - `billing`: deposits from outside with their idempotency, and the
//!   reconciliation report; `KeyedLocks` keeps a deposit from
//!   running twice at once.
//! - `accounts`: users, sessions, personal keys; `accounts::rules` is the
//!   role table as pure functions; `accounts::teams` the team lifecycle
//!   rules; `accounts::invites` the invitations, which `mailer` delivers;
//!   `accounts::limits` who sets which limit.
//! - `store`: the `Store` supertrait over one trait per concern, the record
//!   types in `store::records`; `store::memory` and `store::redis_store`
//!   (connection and key names, ledger, records, pub/sub), held to one
//!   contract suite.
//! - `api`: the management API; each handler parses, calls one domain
//!   function and maps the result; `api::error` is the one error -> HTTP
//!   table.
//! - `ledger_db`: the ledger database (PostgreSQL, G2): schema migrations,
//!   batched idempotent inserts, the Owner's ledger view, and
//!   `ledger_db::export`, the task that moves entries from the store's
//!   export queues to it.
//! - `notify`: webhooks and low-balance mail (N1-N3): the worker that fans
//!   logged events out to endpoints and delivers them, signed per Standard
//!   Webhooks (`notify::sign`), through a client that refuses private
//!   addresses (`notify::client`); the thresholds live in the wallet actor
//!   (`wallet::alerts`), the routes in `api::webhooks`.
//! - `usage`: 30-day reports from the day buckets (pure aggregation).
//! - `money`, `ids`, `clock`, `config`, `metrics`: the shared vocabulary.
//! - `demo`: `tollgate demo`, the whole product in one process, with the
//!   fake upstream of the `tollgate-mock-upstream` crate
//!   (`crates/mock-upstream`), which the tests and benches use too.

pub mod accounts;
pub mod api;
pub mod app;
pub mod auth;
pub mod billing;
pub mod clock;
pub mod config;
pub mod connections;
pub mod dashboard;
pub mod demo;
pub mod ids;
pub mod ledger_db;
pub mod limits;
pub mod mailer;
pub mod metrics;
pub mod money;
pub mod notify;
pub mod pricing;
pub mod proxy;
pub mod server;
pub mod store;
pub mod usage;
pub mod wallet;

pub use app::{App, WALLET_IDLE_AFTER};
pub use billing::{ForgetLock, KeyedLocks};
pub use server::{start, Running};
