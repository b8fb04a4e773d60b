//! Money between wallets under a transfer id (team create, join, delete).
//! The transfer record is written before the first half: the source wallet
//! withdraws under `xfer:{id}:out`, the destination credits `xfer:{id}:in`,
//! each applied at most once, and the membership change the record carries
//! (applied by the caller's `Membership`) is idempotent too. A crash between
//! the halves is finished by `recover` at start (and by `retry_loop` while
//! running), never doubled. Who may move money is decided by `accounts`.

use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::clock::Clock;
use crate::ids;
use crate::money::Nanos;
use crate::store::{Change, EntryKind, LedgerEntry, Store, StoreError, TransferOp, TransferRecord};
use crate::wallet::ledger::Ledger;
use crate::wallet::{team_wallet_id, WalletError, WalletRegistry, WithdrawRule};

/// The non-money half of a transfer: the membership change its `op` names.
/// Must be idempotent: `recover` reruns it whole.
pub trait Membership: Send + Sync {
    type Error: From<StoreError> + From<WalletError> + Send;

    fn apply(&self, op: &TransferOp) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Runs transfers: records them, moves the money, marks them done.
pub struct Transfers {
    store: Arc<dyn Store>,
    wallets: Arc<WalletRegistry>,
    clock: Arc<dyn Clock>,
    /// How long a deleted team's wallet waits for in-flight requests (D1).
    close_wait: Duration,
}

impl Transfers {
    pub fn new(
        store: Arc<dyn Store>,
        wallets: Arc<WalletRegistry>,
        clock: Arc<dyn Clock>,
        close_wait: Duration,
    ) -> Transfers {
        Transfers {
            store,
            wallets,
            clock,
            close_wait,
        }
    }

    /// A new transfer record (not stored yet) under a fresh transfer id.
    pub fn open(&self, from_wallet: String, to_wallet: String, op: TransferOp) -> TransferRecord {
        TransferRecord {
            id: ids::new_id("xfer"),
            from_wallet,
            to_wallet,
            op,
            created_at: self.clock.now(),
        }
    }

    /// B10: whether `t`'s money fits its destination, checked before its
    /// record is written (nothing is changed when it does not). The
    /// amount checked bounds what `run` will move: for a join or a create
    /// the source's movable paid balance (it only shrinks as holds are
    /// placed); for a deletion the team's whole balance (settlements only
    /// lower it). Credits that could raise either (deposits, other
    /// transfers) take the same membership lock as the caller of this
    /// check (`Teams::exclusive`), so in one process nothing changes the
    /// answer before the money moves. Across instances the store's own
    /// check refuses the credit instead, and the transfer stays pending
    /// (retried by `retry_loop`, logged) until it fits.
    pub async fn check_fits(&self, t: &TransferRecord) -> Result<(), WalletError> {
        let from = self.wallets.get(&t.from_wallet).await?.snapshot().await?;
        let to = self.wallets.get(&t.to_wallet).await?.snapshot().await?;
        let from = Ledger {
            paid: from.paid,
            promo: from.promo,
            held: from.held,
            threshold: Nanos::ZERO,
        };
        let amount = match rule_of(&t.op) {
            WithdrawRule::Everything => i128::from(from.paid.0) + i128::from(from.promo.0),
            rule @ WithdrawRule::MovablePaid => {
                let d = from.withdrawal(rule);
                i128::from(d.paid.0) + i128::from(d.promo.0)
            }
        };
        Ledger::new(to.paid, to.promo, Nanos::ZERO).fits(amount, 0)
    }

    /// Record the transfer, make the membership change, move the money,
    /// mark it done. Every step is idempotent, so `recover` reruns it whole.
    pub async fn run<M: Membership>(&self, t: &TransferRecord, m: &M) -> Result<Nanos, M::Error> {
        self.store.put_transfer(t).await?;
        m.apply(&t.op).await?;
        let rule = rule_of(&t.op);
        let from = self.wallets.get(&t.from_wallet).await?;
        let amount = from
            .withdraw(format!("xfer:{}:out", t.id), rule, t.id.clone())
            .await?;
        if amount != Nanos::ZERO {
            let to = self.wallets.get(&t.to_wallet).await?;
            to.credit(LedgerEntry {
                id: format!("xfer:{}:in", t.id),
                wallet_id: t.to_wallet.clone(),
                kind: EntryKind::TransferIn,
                paid: amount,
                promo: Nanos::ZERO,
                at: self.clock.now(),
                reference: t.id.clone(),
                usage: None,
            })
            .await?;
        }
        for wallet in [&t.from_wallet, &t.to_wallet] {
            let _ = self.store.publish(&Change::Wallet(wallet.clone())).await;
        }
        self.store.finish_transfer(&t.id).await?;
        Ok(amount)
    }

    /// Finish transfers a crash interrupted (at start, then by `retry_loop`).
    pub async fn recover<M: Membership>(&self, m: &M) -> Result<usize, M::Error> {
        let pending = self.store.unfinished_transfers().await?;
        let n = pending.len();
        for t in pending {
            tracing::warn!(transfer = %t.id, "finishing an interrupted transfer");
            if let TransferOp::DeleteTeam { team_id, .. } = &t.op {
                let wallet = self.wallets.get(&team_wallet_id(team_id)).await?;
                let _ = wallet.close(self.close_wait).await;
            }
            self.run(&t, m).await?;
        }
        Ok(n)
    }
}

/// How much of the source a transfer takes.
fn rule_of(op: &TransferOp) -> WithdrawRule {
    match op {
        TransferOp::DeleteTeam { .. } => WithdrawRule::Everything,
        _ => WithdrawRule::MovablePaid,
    }
}

/// Every `every`, while `owner` lives, run `finish` on it (which recovers
/// the transfers a failed store write left behind, under whatever lock its
/// owner needs); a failure is logged and retried next time.
pub async fn retry_loop<T, F, Fut, E>(owner: Weak<T>, every: Duration, finish: F)
where
    F: Fn(Arc<T>) -> Fut,
    Fut: Future<Output = Result<usize, E>>,
    E: Display,
{
    loop {
        tokio::time::sleep(every).await;
        let Some(owner) = owner.upgrade() else { break };
        if let Err(e) = finish(owner).await {
            tracing::warn!(error = %e, "unfinished transfers still pending; will retry");
        }
    }
}
