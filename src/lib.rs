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
//! - `accounts`: users, sessions, personal keys; `accounts::rules` is the
//!   role table as pure functions.
//! - `teams`: the team lifecycle (create, invite, join, leave, delete) and
//!   money moves between wallets; `mailer` delivers the invite emails.
//! - `store`: the `Store` trait; the memory store and the Redis store,
//!   held to one contract suite.
//! - `api`: the management API; `api::error` is the one error -> HTTP table.
//! - `usage`: 30-day reports from the day buckets (pure aggregation).
//! - `money`, `ids`, `clock`, `config`, `metrics`: the shared vocabulary.
//! - `mock_upstream`: a fake OpenAI upstream for the demo, tests and benches.

pub mod accounts;
pub mod api;
pub mod auth;
pub mod billing;
pub mod clock;
pub mod config;
pub mod demo;
pub mod ids;
pub mod mailer;
pub mod metrics;
pub mod mock_upstream;
pub mod money;
pub mod pricing;
pub mod proxy;
pub mod server;
pub mod store;
pub mod teams;
pub mod usage;
pub mod wallet;

use std::sync::Arc;

use arc_swap::ArcSwap;
use dashmap::DashMap;

use accounts::Accounts;
use auth::KeyCache;
use clock::{Clock, SystemClock};
use config::Config;
use ids::RequestIds;
use mailer::Mailer;
use pricing::Pricing;
use proxy::forward::Upstream;
use store::{Store, StoreError};
use teams::Teams;
use wallet::WalletRegistry;

pub use server::{start, Running};

/// How long a wallet's actor may sit unused before it is stopped.
pub const WALLET_IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

/// Everything a request handler can reach. Built once, shared by `Arc`.
pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    /// Swapped whole on reload; readers never wait.
    pub pricing: ArcSwap<Pricing>,
    pub wallets: Arc<WalletRegistry>,
    pub keys: Arc<KeyCache>,
    pub accounts: Accounts,
    pub teams: Arc<Teams>,
    pub clock: Arc<dyn Clock>,
    pub upstream: Upstream,
    pub ids: RequestIds,
    pub locks: KeyedLocks,
}

impl App {
    pub fn new(config: Config, store: Arc<dyn Store>, pricing: Pricing) -> App {
        App::with_clock(config, store, pricing, Arc::new(SystemClock))
    }

    pub fn with_clock(
        config: Config,
        store: Arc<dyn Store>,
        pricing: Pricing,
        clock: Arc<dyn Clock>,
    ) -> App {
        let ids = RequestIds::default();
        let wallets = Arc::new(WalletRegistry::new(
            store.clone(),
            config.suspend_threshold,
            config.flush_interval,
            config.flush_failure_bound,
            ids.nonce(),
            clock.clone(),
        ));
        let keys = Arc::new(KeyCache::new(config.negative_cache_ttl));
        let mailer = Mailer::new(
            store.clone(),
            clock.clone(),
            config.mailer_webhook_url.clone(),
        );
        App {
            pricing: ArcSwap::from_pointee(pricing),
            teams: Arc::new(Teams::new(
                store.clone(),
                wallets.clone(),
                keys.clone(),
                clock.clone(),
                mailer,
                config.public_url.clone(),
                config.team_close_wait,
            )),
            wallets,
            keys,
            accounts: Accounts::new(store.clone(), clock.clone(), config.session_ttl),
            clock,
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

    /// Whether the user belongs to any team (K2).
    pub async fn in_a_team(&self, user_id: &str) -> Result<bool, StoreError> {
        Ok(!self.store.memberships(user_id).await?.is_empty())
    }

    /// Work done once before serving: finish interrupted transfers, follow
    /// other instances' changes, retry undelivered mail.
    pub async fn boot(self: &Arc<Self>) -> Result<(), teams::TeamError> {
        let finished = self.teams.recover().await?;
        if finished > 0 {
            tracing::warn!(finished, "finished transfers interrupted by the last stop");
        }
        // Stop wallet actors nobody used for a while (their memory goes;
        // the next use starts them again from the store).
        let app = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(WALLET_IDLE_AFTER / 2).await;
                let Some(a) = app.upgrade() else { break };
                let stopped = a.wallets.stop_idle(WALLET_IDLE_AFTER).await;
                if stopped > 0 {
                    tracing::debug!(stopped, "stopped idle wallet actors");
                }
            }
        });
        if let Some(mut changes) = self.store.subscribe() {
            let app = Arc::downgrade(self);
            tokio::spawn(async move {
                while let Some(change) = changes.recv().await {
                    let Some(app) = app.upgrade() else { break };
                    match change {
                        store::Change::Key(hash) => app.keys.invalidate(&hash),
                        store::Change::Wallet(id) => app.wallets.resync(&id),
                    }
                }
            });
        }
        let mailer = self.teams.mailer().clone();
        tokio::spawn(mailer.retry_loop(std::time::Duration::from_secs(5)));
        tokio::spawn(Teams::retry_loop(
            Arc::downgrade(&self.teams),
            std::time::Duration::from_secs(30),
        ));
        // Usage buckets older than 90 days go, now and daily.
        let app = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(a) = app.upgrade() else { break };
                let before =
                    a.clock.now().date_naive() - chrono::Duration::days(i64::from(usage::MAX_DAYS));
                if let Err(e) = a.store.prune_usage(before).await {
                    tracing::warn!(error = %e, "usage pruning failed");
                }
                drop(a);
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            }
        });
        Ok(())
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

    /// On drop (every return path), forget `name`'s lock if nobody else
    /// waits on it. Declared after the lock and its guard, it drops first;
    /// by then the call's outcome is in the store, so a caller that arrives
    /// after and gets a fresh lock sees it.
    pub fn forget_on_drop<'a>(&'a self, name: &'a str) -> ForgetLock<'a> {
        ForgetLock { locks: self, name }
    }
}

/// See `KeyedLocks::forget_on_drop`.
pub struct ForgetLock<'a> {
    locks: &'a KeyedLocks,
    name: &'a str,
}

impl Drop for ForgetLock<'_> {
    fn drop(&mut self) {
        // Our own `Arc` may still be alive (dropped after this), so 2 is
        // "nobody else"; a waiter holds a third.
        self.locks
            .locks
            .remove_if(self.name, |_, l| Arc::strong_count(l) <= 2);
    }
}
