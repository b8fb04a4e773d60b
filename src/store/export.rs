//! What a store does with ledger entries once their batch is applied
//! (G1-G3), and the queue that carries them to the ledger database.
//!
//! With `ledger_url` set, `apply` appends every entry of a batch to the
//! wallet's export queue in the same atomic step as the balance change
//! (Redis: a stream in the wallet's hash slot), and keeps no ledger list;
//! the exporter (`crate::ledger_db::export`) copies the queue to
//! PostgreSQL and removes what PostgreSQL confirmed. Without it, the store
//! keeps entries for the retention window (G3). Either way it keeps
//! deposits and transfers by id for good (they grow with accounts, not
//! with requests) and remembers settlement batches by a high-water mark
//! per writer, or by batch id for `batch_id_ttl_s`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{LedgerEntry, StoreResult};

/// How a store keeps ledger entries (G1-G3); set once at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerPolicy {
    /// G2: entries go to the export queue for PostgreSQL instead of a kept list.
    pub export: bool,
    /// G1: how long a batch id (or a writer's high-water mark) is remembered.
    pub batch_id_ttl: Duration,
    /// G2: the most entries one wallet's export queue may hold; past it
    /// `apply` answers `Unavailable` and the wallet stops admitting (503).
    /// An empty queue takes a batch of any size.
    pub backlog_max: u64,
    /// G3 (memory store only): the most ledger entries kept, oldest dropped.
    pub memory_entries: usize,
}

impl Default for LedgerPolicy {
    fn default() -> Self {
        LedgerPolicy {
            export: false,
            batch_id_ttl: Duration::from_secs(86_400),
            backlog_max: 1_000_000,
            memory_entries: 100_000,
        }
    }
}

/// An entry waiting in a wallet's export queue, with the queue's cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exported {
    /// The queue's own id for this entry (a Redis stream id).
    pub cursor: String,
    pub entry: LedgerEntry,
}

/// The export queue (G2) and retention (G3).
#[async_trait]
pub trait ExportStore: Send + Sync {
    /// Wallets this process applied export batches to since the last call
    /// (cheap, in memory), taken.
    fn export_dirty(&self) -> Vec<String> {
        Vec::new()
    }
    /// Notified after each exported batch this process applies.
    fn export_wake(&self) -> Arc<tokio::sync::Notify> {
        Arc::new(tokio::sync::Notify::new())
    }
    /// Every wallet whose export queue holds entries, whoever wrote them
    /// (a scan: run at start and now and then, for other instances'
    /// leftovers after a crash).
    async fn export_wallets(&self) -> StoreResult<Vec<String>>;
    /// Up to `max` waiting entries of a wallet, oldest first.
    async fn export_read(&self, wallet_id: &str, max: usize) -> StoreResult<Vec<Exported>>;
    /// Remove these entries (they are in PostgreSQL).
    async fn export_ack(&self, wallet_id: &str, cursors: &[String]) -> StoreResult<()>;
    /// Entries waiting in a wallet's queue.
    async fn export_backlog(&self, wallet_id: &str) -> StoreResult<u64>;
    /// Bring data an older version of the store wrote to this layout, once,
    /// at boot (before anything prunes); answers how many records changed.
    async fn upgrade_layout(&self) -> StoreResult<u64> {
        Ok(0)
    }
    /// G3: drop kept ledger entries applied before `before`, and batch ids
    /// past their time; answers how many entries went.
    async fn prune_ledger(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}

/// The wallets a process exported to and has not yet drained, plus a
/// wake-up for the exporter; shared by both stores.
#[derive(Default)]
pub struct ExportSignal {
    dirty: Mutex<HashSet<String>>,
    pub notify: Arc<tokio::sync::Notify>,
}

impl ExportSignal {
    pub fn mark(&self, wallet_id: &str) {
        let mut d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        if !d.contains(wallet_id) {
            d.insert(wallet_id.to_string());
        }
        drop(d);
        self.notify.notify_one();
    }

    pub fn take(&self) -> Vec<String> {
        let mut d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        d.drain().collect()
    }
}
