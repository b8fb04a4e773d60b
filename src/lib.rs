//! tollgate: a usage-metering gateway for OpenAI-compatible inference APIs.
//! API clients call models through it; it authenticates their key from
//! memory, holds the worst-case cost on the key's wallet, forwards the call,
//! reads the tokens used from the response as it passes, and settles the
//! exact cost. Wallets are prepaid: a team's pool or a user's own balance.
//!
//! # Layout
//! In the order a proxied request meets them:
//! - `server`: listeners, graceful shutdown; `run` and `start` live here.
//! - `proxy`: THE HOT PATH, phase by phase (auth, gate, price, hold,
//!   forward, meter, settle, log).
//! - `auth`: the API key format and the key cache the proxy reads.
//! - `pricing`: USD per million tokens per model; cost and hold estimates.
//! - `wallet`: one actor per wallet, the only writer of its balance; the
//!   pure arithmetic in `wallet::ledger`.
//! - `billing`: deposits from outside and the reconciliation report.
//! - `accounts`: users, sessions, personal keys.
//! - `store`: the `Store` trait, the memory store.
//! - `api`: the management API; `api::error` is the one error -> HTTP table.
//! - `money`, `ids`, `config`, `metrics`: the shared vocabulary.
//! - `mock_upstream`: a fake OpenAI upstream for the demo, tests and benches.

pub mod accounts;
pub mod api;
pub mod auth;
pub mod billing;
pub mod config;
pub mod demo;
pub mod ids;
pub mod metrics;
pub mod mock_upstream;
pub mod money;
pub mod pricing;
pub mod proxy;
pub mod server;
pub mod store;
pub mod wallet;

use std::sync::Arc;

use arc_swap::ArcSwap;
use dashmap::DashMap;

use accounts::Accounts;
use auth::KeyCache;
use config::Config;
use ids::RequestIds;
use pricing::Pricing;
use proxy::forward::Upstream;
use store::{Store, StoreError};
use wallet::WalletRegistry;

pub use server::{start, Running};

/// Everything a request handler can reach. Built once, shared by `Arc`.
pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    /// Swapped whole on reload; readers never wait.
    pub pricing: ArcSwap<Pricing>,
    pub wallets: WalletRegistry,
    pub keys: KeyCache,
    pub accounts: Accounts,
    pub upstream: Upstream,
    pub ids: RequestIds,
    pub locks: KeyedLocks,
}

impl App {
    pub fn new(config: Config, store: Arc<dyn Store>, pricing: Pricing) -> App {
        let ids = RequestIds::default();
        App {
            pricing: ArcSwap::from_pointee(pricing),
            wallets: WalletRegistry::new(
                store.clone(),
                config.suspend_threshold,
                config.flush_interval,
                ids.nonce(),
            ),
            keys: KeyCache::new(config.negative_cache_ttl),
            accounts: Accounts::new(store.clone(), config.session_ttl),
            upstream: Upstream::new(
                config.upstream_api_key.as_ref().map(|s| s.0.as_str()),
                config.upstream_connect_timeout,
                config.upstream_read_timeout,
            ),
            ids,
            locks: KeyedLocks::default(),
            store,
            config,
        }
    }

    /// Whether the user belongs to any team (K2). Teams arrive with the
    /// team-accounts work; until then nobody does.
    pub async fn in_a_team(&self, _user_id: &str) -> Result<bool, StoreError> {
        Ok(false)
    }
}

/// Async locks by name, for calls that must not run twice at once for the
/// same key (idempotent deposits). Entries are dropped when unused.
#[derive(Default)]
pub struct KeyedLocks {
    locks: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

impl KeyedLocks {
    pub fn get(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.entry(name.to_string()).or_default().clone()
    }

    /// Forget `name`'s lock if nobody else holds or waits on it.
    pub fn release(&self, name: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        drop(lock);
        self.locks.remove_if(name, |_, l| Arc::strong_count(l) == 1);
    }
}
