//! Billing: money that enters a wallet from outside (B7 deposits) and the
//! reconciliation report (B8). Deposits go through the wallet actor, durable
//! before they are applied; the entry id is derived from the caller's
//! idempotency key, so a retried deposit is applied once even if the first
//! answer was lost (B9). `deposit_once` is the operator's deposit whole:
//! the idempotency record (same key and body: the first answer again; same
//! key, other body: a conflict), taken under a per-key lock (`KeyedLocks`)
//! so that two retries at once do not both credit.

use std::sync::Arc;

use chrono::Utc;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::accounts::{TeamError, Teams};
use crate::ids;
use crate::money::{Nanos, WideNanos};
use crate::store::{Change, EntryKind, IdempotencyRecord, LedgerEntry, Store, StoreError};
use crate::wallet::{user_wallet_id, Credited, WalletError, WalletHandle, WalletRegistry};

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

/// B8: the report the operator reads. Totals are i128 (B10): each
/// balance fits an i64, their sum need not; nothing is clipped.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct Reconciliation {
    pub deposits_total: WideNanos,
    pub usage_total: WideNanos,
    pub balances_total: WideNanos,
    pub holds_total: WideNanos,
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
        ok: t.balances.0 == t.deposits.0 - t.usage.0,
    })
}

/// Why an operator's deposit was refused.
#[derive(Debug, thiserror::Error)]
pub enum DepositError {
    #[error("this Idempotency-Key was used with another body")]
    IdempotencyConflict,
    #[error("give exactly one of user_id and team_id")]
    InvalidTarget,
    /// The user to credit does not exist.
    #[error("not found")]
    UnknownUser,
    #[error("promo credit is personal: team deposits are paid (stripe or crypto)")]
    PromoToTeam,
    #[error(transparent)]
    Team(#[from] TeamError),
    #[error(transparent)]
    Wallet(#[from] WalletError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An operator's deposit (B7), parsed and checked for shape.
pub struct DepositRequest {
    /// The caller's `Idempotency-Key`.
    pub idempotency_key: String,
    /// The SHA-256 of the request body: the same key with another body is
    /// a conflict.
    pub request_hash: String,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub amount: Nanos,
    pub kind: DepositKind,
    pub reference: String,
}

/// The answer to a deposit, kept whole for a retry to get again.
pub struct DepositReceipt {
    pub status: u16,
    pub body: Value,
}

/// HTTP 201, the status of a deposit made (and of its retries).
const CREATED: u16 = 201;

/// B7, B9: credit the user's or the team's wallet once per idempotency
/// key. A retry with the same body gets the first receipt again.
pub async fn deposit_once(
    store: &dyn Store,
    wallets: &WalletRegistry,
    teams: &Teams,
    locks: &KeyedLocks,
    req: DepositRequest,
) -> Result<DepositReceipt, DepositError> {
    let scope_key = format!("deposit:{}", req.idempotency_key);
    let lock = locks.get(&scope_key);
    let _guard = lock.lock().await;
    let _forget = locks.forget_on_drop(&scope_key);
    if let Some(done) = store.idempotency(&scope_key).await? {
        if done.request_hash != req.request_hash {
            return Err(DepositError::IdempotencyConflict);
        }
        return Ok(DepositReceipt {
            status: done.status,
            body: serde_json::from_str(&done.response).unwrap_or(Value::Null),
        });
    }
    // Under the membership lock: a transfer's range check (B10) and its
    // money moving see no deposit in between (`Transfers::check_fits`).
    let membership = teams.exclusive().await;
    let wallet_id = deposit_target(store, teams, &req).await?;
    let wallet = wallets.get(&wallet_id).await?;
    // B10: a deposit that would take the balance out of range is refused
    // before anything is written, the idempotency record included, so a
    // retry is refused again.
    let credited = deposit(&wallet, req.amount, req.kind, &req.reference, &scope_key).await?;
    drop(membership);
    // Other instances running this wallet re-read it (B3 across instances).
    if let Err(e) = store.publish(&Change::Wallet(wallet_id.clone())).await {
        tracing::warn!(error = %e, "deposit not announced to other instances");
    }
    let body = json!({
        "id": format!("dep:{}", ids::sha256_hex(scope_key.as_bytes())),
        "wallet": wallet_id,
        "amount": req.amount,
        "kind": req.kind,
        "balance_after": credited.view.balance(),
    });
    let record = IdempotencyRecord {
        request_hash: req.request_hash,
        status: CREATED,
        response: body.to_string(),
    };
    store.put_idempotency(&scope_key, &record).await?;
    Ok(DepositReceipt {
        status: CREATED,
        body,
    })
}

/// The wallet a deposit credits: a user's that exists, or a live team's
/// (paid money only: promo credit is personal).
async fn deposit_target(
    store: &dyn Store,
    teams: &Teams,
    req: &DepositRequest,
) -> Result<String, DepositError> {
    match (&req.user_id, &req.team_id) {
        (Some(user_id), None) => {
            store
                .user(user_id)
                .await?
                .ok_or(DepositError::UnknownUser)?;
            Ok(user_wallet_id(user_id))
        }
        (None, Some(team_id)) => {
            if !req.kind.is_paid() {
                return Err(DepositError::PromoToTeam);
            }
            Ok(teams.deposit_target(team_id).await?)
        }
        _ => Err(DepositError::InvalidTarget),
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
