//! The store work a wallet actor hands off its mailbox: each function is
//! the body of one tracked background task, whose outcome the actor gets
//! back as a `*Done` message. Kept apart from the actor so the mailbox
//! code reads as decisions only, and every write's error handling (log,
//! answer `Err(())`, let the actor decide) sits in one place.

use super::WalletError;
use crate::money::Nanos;
use crate::store::{
    Applied, Change, EventRecord, LedgerEntry, Store, StoreError, WalletBalance, WalletBatch,
};

/// Write a settlement batch; `Some(balance after)` if the store took it.
pub(super) async fn flush(store: &dyn Store, batch: &WalletBatch) -> Option<WalletBalance> {
    match store.apply(batch).await {
        Ok((_, after)) => {
            // Other instances running this wallet re-read it (a no-op on a
            // single-process store).
            let change = Change::Wallet(batch.wallet_id.clone());
            if let Err(e) = store.publish(&change).await {
                tracing::debug!(error = %e, "flush not announced");
            }
            Some(after)
        }
        Err(e) => {
            tracing::warn!(wallet = %batch.wallet_id, error = %e, "wallet flush failed; will retry");
            None
        }
    }
}

/// Write a transfer out; answers the amount the store holds for its id
/// (the first one taken, if an earlier run applied it).
pub(super) async fn withdraw(
    store: &dyn Store,
    entry: &LedgerEntry,
) -> Result<(Applied, Nanos), ()> {
    let batch = WalletBatch::single(entry);
    match store.apply(&batch).await {
        Ok((Applied::Now, _)) => Ok((Applied::Now, Nanos::ZERO - entry.amount())),
        Ok((Applied::Before, _)) => match store.ledger_entry(&entry.wallet_id, &entry.id).await {
            Ok(Some(first)) => Ok((Applied::Before, Nanos::ZERO - first.amount())),
            _ => Err(()),
        },
        Err(e) => {
            tracing::warn!(wallet = %entry.wallet_id, error = %e, "transfer out not persisted");
            Err(())
        }
    }
}

/// Write a credit (deposit, transfer in) before it is applied in memory.
/// The store's own range check (B10: another instance may have credited
/// the wallet meanwhile) answers `OutOfRange`; any other failure is
/// `Unavailable`.
pub(super) async fn credit(store: &dyn Store, entry: &LedgerEntry) -> Result<Applied, WalletError> {
    let batch = WalletBatch::single(entry);
    store.apply(&batch).await.map(|(a, _)| a).map_err(|e| {
        tracing::warn!(wallet = %batch.wallet_id, error = %e, "credit not persisted");
        match e {
            StoreError::OutOfRange(_) => WalletError::OutOfRange,
            _ => WalletError::Unavailable,
        }
    })
}

/// B2, B3: a team's suspension or resumption in its event log.
pub(super) async fn team_event(store: &dyn Store, event: &EventRecord) {
    if let Err(e) = store.append_event(event).await {
        tracing::warn!(error = %e, "team event not recorded");
    }
}
