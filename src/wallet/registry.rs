//! Registry: wallet id -> running actor. Starts an actor on first use,
//! loading the balance from the store, so every wallet has exactly one
//! writer in this process.
//!
//! DashMap of `OnceCell`s, not a `Mutex<HashMap>`: the hot path reads it
//! without a global lock, and two first uses of one wallet race only on
//! that wallet's cell, which lets exactly one of them start the actor.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ractor::Actor;
use tokio::sync::OnceCell;

use super::actor::{WalletActor, WalletArgs, WalletShared};
use super::ledger::{Ledger, WalletError};
use super::WalletHandle;
use crate::clock::Clock;
use crate::money::Nanos;
use crate::store::Store;

pub struct WalletRegistry {
    wallets: DashMap<Arc<str>, Arc<OnceCell<WalletHandle>>>,
    store: Arc<dyn Store>,
    threshold: Nanos,
    flush_interval: Duration,
    nonce: u64,
    clock: Arc<dyn Clock>,
}

impl WalletRegistry {
    pub fn new(
        store: Arc<dyn Store>,
        threshold: Nanos,
        flush_interval: Duration,
        nonce: u64,
        clock: Arc<dyn Clock>,
    ) -> WalletRegistry {
        WalletRegistry {
            wallets: DashMap::new(),
            store,
            threshold,
            flush_interval,
            nonce,
            clock,
        }
    }

    pub fn threshold(&self) -> Nanos {
        self.threshold
    }

    /// The wallet's actor, started (and its balance loaded) if need be.
    pub async fn get(&self, wallet_id: &str) -> Result<WalletHandle, WalletError> {
        let cell = match self.wallets.get(wallet_id) {
            Some(c) => c.clone(),
            None => self
                .wallets
                .entry(Arc::from(wallet_id))
                .or_default()
                .clone(),
        };
        cell.get_or_try_init(|| self.start(wallet_id))
            .await
            .cloned()
    }

    async fn start(&self, wallet_id: &str) -> Result<WalletHandle, WalletError> {
        let balance = self.store.wallet(wallet_id).await.map_err(|e| {
            tracing::warn!(wallet = wallet_id, error = %e, "cannot load wallet");
            WalletError::Unavailable
        })?;
        let id: Arc<str> = Arc::from(wallet_id);
        let shared = Arc::new(WalletShared::default());
        let args = WalletArgs {
            wallet_id: id.clone(),
            ledger: Ledger::new(balance.paid, balance.promo, self.threshold),
            shared: shared.clone(),
            store: self.store.clone(),
            flush_interval: self.flush_interval,
            max_flush_failure: Duration::from_secs(5),
            nonce: self.nonce,
            clock: self.clock.clone(),
        };
        let (actor, _join) = Actor::spawn(None, WalletActor, args).await.map_err(|e| {
            tracing::error!(wallet = wallet_id, error = %e, "cannot start wallet actor");
            WalletError::Unavailable
        })?;
        Ok(WalletHandle { id, actor, shared })
    }

    /// Another instance changed this wallet's stored balance: the running
    /// actor (if any) re-reads it.
    pub fn resync(&self, wallet_id: &str) {
        if let Some(w) = self.wallets.get(wallet_id).and_then(|c| c.get().cloned()) {
            w.resync();
        }
    }

    /// Every running wallet.
    pub fn running(&self) -> Vec<WalletHandle> {
        self.wallets
            .iter()
            .filter_map(|e| e.value().get().cloned())
            .collect()
    }

    /// Persist everything pending in every wallet (shutdown, reconcile).
    pub async fn flush_all(&self) -> Result<(), WalletError> {
        let mut result = Ok(());
        for w in self.running() {
            if let Err(e) = w.flush().await {
                result = Err(e);
            }
        }
        result
    }

    /// Sum of outstanding holds across running wallets.
    pub async fn holds_total(&self) -> Nanos {
        let mut total = Nanos::ZERO;
        for w in self.running() {
            if let Ok(v) = w.snapshot().await {
                total += v.held;
            }
        }
        total
    }
}
