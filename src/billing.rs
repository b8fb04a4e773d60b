//! Billing: money that enters a wallet from outside (B7 deposits) and the
//! reconciliation report (B8). Deposits go through the wallet actor, durable
//! before they are applied; the entry id is derived from the caller's
//! idempotency key, so a retried deposit is applied once even if the first
//! answer was lost (B9).

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::ids;
use crate::money::Nanos;
use crate::store::{EntryKind, LedgerEntry, Store, StoreError};
use crate::wallet::{Credited, WalletError, WalletHandle, WalletRegistry};

/// Where a deposit came from (B7): paid money or free credit.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DepositKind {
    Stripe,
    Crypto,
    Promo,
}

impl DepositKind {
    pub fn is_paid(self) -> bool {
        self != DepositKind::Promo
    }
}

/// Credit `amount` to `wallet`. `dedupe` names the deposit for B9: the same
/// `dedupe` never credits twice.
pub async fn deposit(
    wallet: &WalletHandle,
    amount: Nanos,
    kind: DepositKind,
    reference: &str,
    dedupe: &str,
) -> Result<Credited, WalletError> {
    let (paid, promo) = if kind.is_paid() {
        (amount, Nanos::ZERO)
    } else {
        (Nanos::ZERO, amount)
    };
    let entry = LedgerEntry {
        id: format!("dep:{}", ids::sha256_hex(dedupe.as_bytes())),
        wallet_id: wallet.id.to_string(),
        kind: EntryKind::Deposit,
        paid,
        promo,
        at: Utc::now(),
        reference: reference.to_string(),
        usage: None,
    };
    wallet.credit(entry).await
}

/// B8: the report the operator reads.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct Reconciliation {
    pub deposits_total: Nanos,
    pub usage_total: Nanos,
    pub balances_total: Nanos,
    pub holds_total: Nanos,
    pub ok: bool,
}

/// Flush every wallet, then check that balances = deposits - usage.
pub async fn reconcile(
    store: &dyn Store,
    wallets: &WalletRegistry,
) -> Result<Reconciliation, StoreError> {
    wallets
        .flush_all()
        .await
        .map_err(|_| StoreError::Unavailable("wallet flush failed".into()))?;
    let t = store.money_totals().await?;
    Ok(Reconciliation {
        deposits_total: t.deposits,
        usage_total: t.usage,
        balances_total: t.balances,
        holds_total: wallets.holds_total().await,
        ok: t.balances == t.deposits - t.usage,
    })
}
