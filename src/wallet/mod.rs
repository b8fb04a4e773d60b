//! Wallet: a prepaid balance that usage draws from (a team's pool or a
//! user's personal balance). Math in ledger.rs (pure); actor.rs serialises
//! changes (one method per message) over state.rs, persist.rs writes them
//! off the mailbox; registry.rs starts one actor per wallet on first use.
//! Nothing here speaks HTTP.

pub mod actor;
pub mod alerts;
pub mod ledger;
pub mod limits;
mod persist;
pub mod registry;
mod state;
pub mod transfer;

use std::sync::Arc;

use ractor::rpc::CallResult;

pub use ledger::{WalletError, WithdrawRule};
pub use registry::WalletRegistry;
pub use state::{Credited, WalletShared, WalletView};

use crate::limits::Charge;
use crate::money::Nanos;
use crate::store::{LedgerEntry, UsageFacts};
use actor::{Msg, WalletRef};

/// How a team wallet's id begins; `team_wallet_id` writes it and
/// `team_of` reads it, nothing else.
const TEAM_PREFIX: &str = "team:";

/// The personal wallet of a user.
pub fn user_wallet_id(user_id: &str) -> String {
    format!("user:{user_id}")
}

/// The wallet of a team.
pub fn team_wallet_id(team_id: &str) -> String {
    format!("{TEAM_PREFIX}{team_id}")
}

/// The team whose wallet `wallet_id` is, if it is a team's. Read once, when
/// the registry makes the wallet's slot (ids arrive as text: from key
/// records, transfer records and other instances' messages); the actor
/// then goes by the typed field.
fn team_of(wallet_id: &str) -> Option<Arc<str>> {
    wallet_id.strip_prefix(TEAM_PREFIX).map(Arc::from)
}

/// A cheap, cloneable handle to a wallet, valid across its actor's idle
/// stops and restarts: key cache entries keep it for as long as they live.
#[derive(Clone)]
pub struct WalletHandle {
    pub id: Arc<str>,
    slot: Arc<registry::Slot>,
}

fn answer<T>(r: Result<CallResult<T>, impl std::fmt::Debug>) -> Result<T, WalletError> {
    match r {
        Ok(CallResult::Success(v)) => Ok(v),
        _ => Err(WalletError::Unavailable),
    }
}

/// How many times a call is resent to a restarted actor. Each resend
/// follows a stop that won the race with the call; an idle sweep that
/// stops actors back to back (tests/wallet_idle.rs) beat 4 now and then.
const RESTARTS: usize = 16;

/// Whether a call's failure means the actor was gone (stopped while idle,
/// or just stopping): the message was not handled, so it may be sent again
/// to a restarted actor.
fn gone<T, M>(r: &Result<CallResult<T>, ractor::MessagingErr<M>>) -> bool {
    matches!(r, Err(_) | Ok(CallResult::SenderError))
}

impl WalletHandle {
    /// B2: read on every request, without messaging the actor.
    pub fn is_suspended(&self) -> bool {
        self.slot.shared.is_suspended()
    }

    /// The running actor, restarted (balance reloaded) if it was stopped.
    async fn actor(&self) -> Result<WalletRef, WalletError> {
        self.slot.actor(&self.id).await
    }

    /// `call` the actor; if it turns out to have stopped, once more on a
    /// restarted one (a freshly started actor is not idle).
    async fn call<T: Send + 'static>(
        &self,
        msg: impl Fn(ractor::RpcReplyPort<T>) -> Msg,
        timeout: Option<std::time::Duration>,
    ) -> Result<T, WalletError> {
        let mut r = self.actor().await?.call(&msg, timeout).await;
        // A sweep may stop a just-restarted actor before our message lands;
        // a few tries make that as unlikely as a lost race can be.
        for _ in 0..RESTARTS {
            if !gone(&r) {
                break;
            }
            r = self.actor().await?.call(&msg, timeout).await;
        }
        answer(r)
    }

    /// B6: reserve `amount` for `request_id`. The returned `Hold` must be
    /// settled; dropped unsettled, it releases itself.
    pub async fn hold(&self, request_id: u64, amount: Nanos) -> Result<Hold, WalletError> {
        self.hold_charged(request_id, amount, None).await
    }

    /// B6 and Q1: reserve `amount` for `request_id` if it also fits every
    /// spend limit of `charge` (the key's, the member's): checked and
    /// reserved by the actor in one step, so concurrent requests cannot
    /// pass a limit. A limit's refusal is `WalletError::QuotaExceeded`.
    pub async fn hold_charged(
        &self,
        request_id: u64,
        amount: Nanos,
        charge: Option<&Charge>,
    ) -> Result<Hold, WalletError> {
        // The guard exists before the message is sent: if this future is
        // dropped while waiting (the client went away), or the hold is
        // refused, its `Drop` sends `Release`, which the mailbox delivers
        // after the `Hold` (a release of an unknown id is a no-op). So no
        // path can leave a reservation behind. The hold is settled with the
        // actor that admitted it, which does not stop while holds are open.
        let mut guard = Hold {
            wallet: self.clone(),
            actor: self.actor().await?,
            request_id,
            open: true,
        };
        let msg = |reply_to| Msg::Hold {
            request_id,
            amount,
            charge: charge.cloned(),
            reply_to,
        };
        let mut r = guard.actor.call(msg, None).await;
        for _ in 0..RESTARTS {
            if !gone(&r) {
                break;
            }
            guard.actor = self.actor().await?;
            r = guard.actor.call(msg, None).await;
        }
        answer(r)??;
        Ok(guard)
    }

    /// Durable first, then applied (deposits, transfers in).
    pub async fn credit(&self, entry: LedgerEntry) -> Result<Credited, WalletError> {
        self.call(
            |reply_to| Msg::Credit {
                entry: Box::new(entry.clone()),
                reply_to,
            },
            None,
        )
        .await?
    }

    /// A transfer out under `entry_id` (idempotent: a retry answers the
    /// amount first taken).
    pub async fn withdraw(
        &self,
        entry_id: String,
        rule: WithdrawRule,
        reference: String,
    ) -> Result<Nanos, WalletError> {
        self.call(
            |reply_to| Msg::Withdraw {
                entry_id: entry_id.clone(),
                rule,
                reference: reference.clone(),
                reply_to,
            },
            None,
        )
        .await?
    }

    /// Re-read the stored balance (another instance changed it). A stopped
    /// actor is started instead: it loads the balance, and publishes the
    /// suspended flag the gate reads without it.
    pub fn resync(&self) {
        match self.slot.running() {
            Some(actor) => {
                let _ = actor.cast(Msg::Resync);
                let _ = actor.cast(Msg::ResyncLimits);
            }
            None => {
                let me = self.clone();
                self.slot.tasks().spawn(async move {
                    let _ = me.actor().await;
                });
            }
        }
    }

    /// N3: mark a new team wallet while it is funded at creation (its
    /// resumption then is not logged); unmark it after.
    pub fn mark_fresh(&self, fresh: bool) {
        self.slot
            .shared
            .fresh
            .store(fresh, std::sync::atomic::Ordering::Release);
    }

    /// N2: new low-balance thresholds for the running actor (a stopped
    /// one loads them from the store when it starts).
    pub fn set_alerts(&self, thresholds: Vec<Nanos>) {
        if let Some(actor) = self.slot.running() {
            let _ = actor.cast(Msg::SetAlerts(thresholds));
        }
    }

    /// D1: refuse new holds, wait until every outstanding one settled.
    pub async fn close(&self, wait: std::time::Duration) -> Result<(), WalletError> {
        self.call(|reply_to| Msg::Close { reply_to }, Some(wait))
            .await
    }

    pub async fn snapshot(&self) -> Result<WalletView, WalletError> {
        self.call(|reply_to| Msg::Snapshot { reply_to }, None).await
    }

    /// Wait until everything settled so far is in the store.
    pub async fn flush(&self) -> Result<(), WalletError> {
        // A stopped actor had nothing left to write.
        let Some(actor) = self.slot.running() else {
            return Ok(());
        };
        answer(
            actor
                .call(|reply_to| Msg::FlushNow { reply_to }, None)
                .await,
        )?
    }
}

/// A reservation on a wallet for one request (B6).
#[must_use = "settle the hold, or drop it to release"]
pub struct Hold {
    wallet: WalletHandle,
    /// The actor that admitted the hold: it settles it.
    actor: WalletRef,
    request_id: u64,
    open: bool,
}

impl Hold {
    pub fn wallet_id(&self) -> &str {
        &self.wallet.id
    }

    /// Debit the actual cost and release the reservation. Sent to the
    /// actor's mailbox now: anything asked of the wallet afterwards sees it.
    pub fn settle(mut self, cost: Nanos, reference: String, facts: UsageFacts) {
        self.open = false;
        let _ = self.actor.cast(Msg::Settle {
            request_id: self.request_id,
            cost,
            reference,
            facts: Box::new(facts),
        });
        crate::metrics::settlement(cost);
    }

    /// Nothing billed (U4, P5).
    pub fn release(self) {
        drop(self);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.open {
            let _ = self.actor.cast(Msg::Release {
                request_id: self.request_id,
            });
            crate::metrics::hold_released();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn team_wallets_are_known_by_their_id() {
        assert_eq!(team_of(&team_wallet_id("tm_1")).as_deref(), Some("tm_1"));
        assert_eq!(team_of(&user_wallet_id("tm_1")), None);
    }
}
