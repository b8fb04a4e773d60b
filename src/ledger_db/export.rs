//! The exporter (G2): moves ledger entries from the store's per-wallet
//! export queues to PostgreSQL, then removes what PostgreSQL confirmed.
//!
//! Insert first, acknowledge after: a crash between the two leaves the
//! entries in the queue, and the next pass inserts them again, which the
//! database ignores (idempotent by entry id). So a crash anywhere neither
//! loses nor doubles an entry. While PostgreSQL is away the queues grow,
//! up to the store's backlog bound; past it the store refuses batches and
//! wallets stop admitting (503), as when Redis is away.
//!
//! It learns of work three ways: the store's in-process signal after each
//! exported batch (fast), a scan of every wallet at start and every
//! `SCAN_EVERY` (another instance's leftovers after a crash), and the
//! wallets whose export failed (retried with a growing pause).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::LedgerDb;
use crate::metrics;
use crate::store::Store;

/// Entries read from one queue and inserted in one transaction.
const BATCH: usize = 1_000;
/// How often every wallet's queue is checked, whoever wrote it.
const SCAN_EVERY: Duration = Duration::from_secs(30);
/// The pause after a failed pass grows from the first to the last.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_LAST: Duration = Duration::from_secs(5);
/// With nothing signalled, look again after this long anyway.
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// Moves entries from `store` to `db` until `shutdown`.
pub struct Exporter {
    store: Arc<dyn Store>,
    db: Arc<LedgerDb>,
}

/// What one wallet's drain did.
enum Drained {
    Done(u64),
    Failed(String),
}

impl Exporter {
    pub fn new(store: Arc<dyn Store>, db: Arc<LedgerDb>) -> Exporter {
        Exporter { store, db }
    }

    /// The loop; returns on shutdown (at once, even mid-pass).
    pub async fn run(self, shutdown: CancellationToken) {
        let wake = self.store.export_wake();
        let mut pending: BTreeSet<String> = BTreeSet::new();
        let mut last_scan: Option<tokio::time::Instant> = None;
        let mut pause = RETRY_FIRST;
        loop {
            if last_scan.is_none_or(|t| t.elapsed() >= SCAN_EVERY) {
                match self.store.export_wallets().await {
                    Ok(w) => {
                        pending.extend(w);
                        last_scan = Some(tokio::time::Instant::now());
                    }
                    Err(e) => tracing::warn!(error = %e, "ledger export: store scan failed"),
                }
            }
            pending.extend(self.store.export_dirty());
            // Dropping a pass midway is safe: what was inserted and not yet
            // acknowledged is inserted again, harmlessly, next time.
            let failed = tokio::select! {
                failed = self.pass(&mut pending) => failed,
                () = shutdown.cancelled() => break,
            };
            let wait = if failed {
                let p = pause;
                pause = (pause * 2).min(RETRY_LAST);
                p
            } else {
                pause = RETRY_FIRST;
                IDLE_WAKE
            };
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = wake.notified(), if !failed => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Drain every pending wallet; the ones that fail stay pending.
    /// Answers whether any failed.
    async fn pass(&self, pending: &mut BTreeSet<String>) -> bool {
        let mut failed = false;
        let wallets: Vec<String> = std::mem::take(pending).into_iter().collect();
        for w in wallets {
            match self.drain(&w).await {
                Drained::Done(n) if n > 0 => tracing::trace!(wallet = %w, n, "exported"),
                Drained::Done(_) => {}
                Drained::Failed(e) => {
                    if !failed {
                        tracing::warn!(wallet = %w, error = %e, "ledger export failed; will retry");
                    }
                    failed = true;
                    metrics::ledger_export_failed();
                    pending.insert(w);
                }
            }
        }
        failed
    }

    /// Copy one wallet's queue to PostgreSQL, a batch at a time.
    async fn drain(&self, wallet_id: &str) -> Drained {
        let mut moved = 0u64;
        loop {
            let rows = match self.store.export_read(wallet_id, BATCH).await {
                Ok(rows) => rows,
                Err(e) => return Drained::Failed(e.to_string()),
            };
            let Some(oldest) = rows.first().map(|r| r.entry.at) else {
                return Drained::Done(moved);
            };
            let lag = (Utc::now() - oldest).num_milliseconds().max(0);
            metrics::ledger_export_lag(Duration::from_millis(lag as u64));
            let entries: Vec<_> = rows.iter().map(|r| r.entry.clone()).collect();
            if let Err(e) = self.db.insert(&entries).await {
                return Drained::Failed(e.to_string());
            }
            let cursors: Vec<String> = rows.into_iter().map(|r| r.cursor).collect();
            if let Err(e) = self.store.export_ack(wallet_id, &cursors).await {
                // In PostgreSQL already: the next pass inserts them again,
                // harmlessly, and acknowledges.
                return Drained::Failed(e.to_string());
            }
            moved += cursors.len() as u64;
            metrics::ledger_exported(cursors.len() as u64);
            if cursors.len() < BATCH {
                metrics::ledger_export_lag(Duration::ZERO);
                return Drained::Done(moved);
            }
        }
    }
}
