//! Registry: wallet id -> slot (the wallet's actor while it runs). Starts
//! an actor on first use, loading the balance from the store, so every
//! wallet has exactly one writer in this process; stops actors idle for a
//! while (`stop_idle`), and starts them again on demand.
//!
//! DashMap of slots, not a `Mutex<HashMap>`: the hot path reads it without
//! a global lock. A slot's (re)start takes that slot's lock only, which
//! lets exactly one of two racing first uses start the actor.
//!
//! Memory: a running actor costs ~8 KiB (its task, mailbox channels and
//! state; benches/memory.rs); a stopped one leaves its slot (~200 bytes):
//! the suspended flag the gate reads and an empty actor cell.
//!
//! Background work (flushes, credits, withdrawals, re-reads, team events,
//! restarts) runs on the registry's `TaskTracker`, never a bare
//! `tokio::spawn`, so shutdown can close it and wait for the last write
//! after the final flush (`tasks`).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorStatus};
use tokio_util::task::TaskTracker;

use super::actor::{Args, Msg, WalletActor, WalletRef};
use super::ledger::{Ledger, WalletError};
use super::state::WalletShared;
use super::{team_of, WalletHandle};
use crate::clock::Clock;
use crate::money::{Nanos, WideNanos};
use crate::store::Store;

pub struct WalletRegistry {
    wallets: DashMap<Arc<str>, Arc<Slot>>,
    spawner: Arc<Spawner>,
}

/// What starting an actor needs; shared by the registry and every slot.
pub(crate) struct Spawner {
    store: Arc<dyn Store>,
    threshold: Nanos,
    flush_interval: Duration,
    /// How long flushes may keep failing before new holds are refused
    /// (`flush_failure_bound_ms`).
    flush_failure_bound: Duration,
    nonce: u64,
    clock: Arc<dyn Clock>,
    tasks: TaskTracker,
}

/// One wallet: its actor while it runs, and what outlives the actor.
pub(crate) struct Slot {
    pub(crate) shared: Arc<WalletShared>,
    /// Whose wallet: a team's records its suspension changes (B2, B3).
    team_id: Option<Arc<str>>,
    actor: ArcSwapOption<WalletRef>,
    starting: tokio::sync::Mutex<()>,
    spawner: Arc<Spawner>,
}

fn is_running(a: &WalletRef) -> bool {
    matches!(
        a.get_status(),
        ActorStatus::Unstarted
            | ActorStatus::Starting
            | ActorStatus::Running
            | ActorStatus::Upgrading
    )
}

impl Slot {
    /// The actor, if it runs.
    pub(crate) fn running(&self) -> Option<WalletRef> {
        self.actor
            .load()
            .as_deref()
            .filter(|a| is_running(a))
            .cloned()
    }

    /// The registry's tracker, for work a handle starts in the background.
    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.spawner.tasks
    }

    /// The running actor, started if need be (one start at a time).
    pub(crate) async fn actor(&self, id: &Arc<str>) -> Result<WalletRef, WalletError> {
        if let Some(a) = self.running() {
            return Ok(a);
        }
        let _one = self.starting.lock().await;
        if let Some(a) = self.running() {
            return Ok(a);
        }
        // A stopped actor had written everything and held nothing, so the
        // stored balance is the whole truth.
        let a = self
            .spawner
            .spawn(id, self.team_id.clone(), self.shared.clone())
            .await?;
        self.actor.store(Some(Arc::new(a.clone())));
        Ok(a)
    }
}

impl Spawner {
    async fn spawn(
        &self,
        wallet_id: &Arc<str>,
        team_id: Option<Arc<str>>,
        shared: Arc<WalletShared>,
    ) -> Result<WalletRef, WalletError> {
        let balance = self.store.wallet(wallet_id).await.map_err(|e| {
            tracing::warn!(wallet = %wallet_id, error = %e, "cannot load wallet");
            WalletError::Unavailable
        })?;
        let book =
            super::limits::LimitBook::load(&*self.store, wallet_id, self.clock.now().date_naive())
                .await;
        let alerts =
            super::alerts::AlertBook::load(&*self.store, wallet_id, balance.paid + balance.promo)
                .await;
        let args = Args {
            book,
            alerts,
            wallet_id: wallet_id.clone(),
            team_id,
            ledger: Ledger::new(balance.paid, balance.promo, self.threshold),
            shared,
            store: self.store.clone(),
            flush_interval: self.flush_interval,
            max_flush_failure: self.flush_failure_bound,
            nonce: self.nonce,
            clock: self.clock.clone(),
            tasks: self.tasks.clone(),
        };
        let (actor, _join) = Actor::spawn(None, WalletActor, args).await.map_err(|e| {
            tracing::error!(wallet = %wallet_id, error = %e, "cannot start wallet actor");
            WalletError::Unavailable
        })?;
        Ok(actor)
    }
}

impl WalletRegistry {
    /// `flush_failure_bound`: how long a wallet's flushes may keep failing
    /// before it refuses new holds (DESIGN.md; `flush_failure_bound_ms`).
    pub fn new(
        store: Arc<dyn Store>,
        threshold: Nanos,
        flush_interval: Duration,
        flush_failure_bound: Duration,
        nonce: u64,
        clock: Arc<dyn Clock>,
    ) -> WalletRegistry {
        WalletRegistry {
            wallets: DashMap::new(),
            spawner: Arc::new(Spawner {
                store,
                threshold,
                flush_interval,
                flush_failure_bound,
                nonce,
                clock,
                tasks: TaskTracker::new(),
            }),
        }
    }

    pub fn threshold(&self) -> Nanos {
        self.spawner.threshold
    }

    /// Every background task the wallets started (store writes and their
    /// reports, restarts). Shutdown closes it and waits for it after the
    /// final `flush_all`, so no write is cut off mid-way.
    pub fn tasks(&self) -> &TaskTracker {
        &self.spawner.tasks
    }

    /// The wallet's handle, its actor started (and its balance loaded) if
    /// need be.
    pub async fn get(&self, wallet_id: &str) -> Result<WalletHandle, WalletError> {
        let found = self
            .wallets
            .get(wallet_id)
            .map(|e| (e.key().clone(), e.value().clone()));
        let (id, slot) = match found {
            Some(found) => found,
            None => {
                let e = self.wallets.entry(Arc::from(wallet_id)).or_insert_with(|| {
                    Arc::new(Slot {
                        shared: Arc::new(WalletShared::default()),
                        team_id: team_of(wallet_id),
                        actor: ArcSwapOption::empty(),
                        starting: tokio::sync::Mutex::new(()),
                        spawner: self.spawner.clone(),
                    })
                });
                (e.key().clone(), e.value().clone())
            }
        };
        slot.actor(&id).await?;
        Ok(WalletHandle { id, slot })
    }

    /// N2: the wallet's thresholds changed (here, or on another instance:
    /// read from the store); the running actor, if any, takes them.
    pub async fn set_alerts(&self, wallet_id: &str, thresholds: Vec<Nanos>) {
        if let Some((id, slot)) = self
            .wallets
            .get(wallet_id)
            .map(|e| (e.key().clone(), e.value().clone()))
        {
            WalletHandle { id, slot }.set_alerts(thresholds);
        }
    }

    /// Another instance changed this wallet's stored balance: the running
    /// actor (if any) re-reads it.
    pub fn resync(&self, wallet_id: &str) {
        if let Some((id, slot)) = self
            .wallets
            .get(wallet_id)
            .map(|e| (e.key().clone(), e.value().clone()))
        {
            WalletHandle { id, slot }.resync();
        }
    }

    /// Every wallet whose actor runs.
    pub fn running(&self) -> Vec<WalletHandle> {
        self.wallets
            .iter()
            .filter(|e| e.value().running().is_some())
            .map(|e| WalletHandle {
                id: e.key().clone(),
                slot: e.value().clone(),
            })
            .collect()
    }

    /// Stop every actor that handled nothing for `idle_after` and holds
    /// nothing unwritten (the actor decides, in its mailbox's order, so a
    /// message that raced the decision is either handled first or finds the
    /// actor gone and is sent to a new one). Returns how many stopped.
    pub async fn stop_idle(&self, idle_after: Duration) -> usize {
        let slots: Vec<Arc<Slot>> = self.wallets.iter().map(|e| e.value().clone()).collect();
        let mut stopped = 0;
        for slot in slots {
            let Some(current) = slot.actor.load_full() else {
                continue;
            };
            let idle = is_running(&current)
                && matches!(
                    current
                        .call(
                            |reply_to| Msg::StopIfIdle {
                                idle_after,
                                reply_to
                            },
                            Some(Duration::from_secs(5)),
                        )
                        .await,
                    Ok(CallResult::Success(true))
                );
            if idle || !is_running(&current) {
                // Drop our reference (unless a new actor replaced it): the
                // stopped actor's memory goes with the last one.
                slot.actor.compare_and_swap(&current, None);
                stopped += usize::from(idle);
            }
        }
        stopped
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

    /// Sum of outstanding holds across running wallets, in i128 (B10).
    pub async fn holds_total(&self) -> WideNanos {
        let mut total = WideNanos::ZERO;
        for w in self.running() {
            if let Ok(v) = w.snapshot().await {
                total.0 += i128::from(v.held.0);
            }
        }
        total
    }
}
