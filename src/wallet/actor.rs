//! WalletActor: the single writer of one wallet's balance. A thin shell
//! around `Ledger` (the math) that serialises holds, settlements and
//! credits, keeps the `suspended` flag the hot path reads, and persists
//! its changes to the store in batches.
//!
//! Persistence never blocks the mailbox: a flush is a spawned task that
//! reports back with `FlushDone`, so holds keep being answered while Redis
//! is written. Credits (deposits, transfers in) go the other way round:
//! they are written first and applied to memory only once durable, so money
//! never appears that the store does not have.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::ledger::{Ledger, WalletError};
use crate::money::Nanos;
use crate::store::{Applied, EntryKind, LedgerEntry, Part, Store, UsageFacts, WalletBatch};

/// What the hot path reads without messaging the actor (B2).
#[derive(Debug, Default)]
pub struct WalletShared {
    pub suspended: AtomicBool,
}

impl WalletShared {
    pub fn is_suspended(&self) -> bool {
        self.suspended.load(Ordering::Acquire)
    }
}

/// A point-in-time view of a wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalletView {
    pub paid: Nanos,
    pub promo: Nanos,
    pub held: Nanos,
    pub suspended: bool,
}

impl WalletView {
    pub fn balance(&self) -> Nanos {
        self.paid + self.promo
    }
}

/// The outcome of a credit: the balance after, and whether this call
/// applied it (false: the same entry id was applied before, B9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credited {
    pub view: WalletView,
    pub applied_now: bool,
}

pub enum WalletMsg {
    Hold {
        request_id: u64,
        amount: Nanos,
        reply_to: RpcReplyPort<Result<(), WalletError>>,
    },
    /// Debit the actual cost and release the hold (cast: nobody waits).
    Settle {
        request_id: u64,
        cost: Nanos,
        reference: String,
        facts: Box<UsageFacts>,
    },
    Release {
        request_id: u64,
    },
    /// A deposit or transfer in: durable first, then applied.
    Credit {
        entry: Box<LedgerEntry>,
        reply_to: RpcReplyPort<Result<Credited, WalletError>>,
    },
    Snapshot {
        reply_to: RpcReplyPort<WalletView>,
    },
    /// Persist everything pending; answer when the store has it.
    FlushNow {
        reply_to: RpcReplyPort<Result<(), WalletError>>,
    },
    /// Timer: persist the pending batch.
    Flush,
    FlushDone {
        batch: WalletBatch,
        ok: bool,
    },
    CreditDone {
        entry: Box<LedgerEntry>,
        result: Result<Applied, ()>,
        reply_to: RpcReplyPort<Result<Credited, WalletError>>,
    },
}

pub struct WalletArgs {
    pub wallet_id: Arc<str>,
    pub ledger: Ledger,
    pub shared: Arc<WalletShared>,
    pub store: Arc<dyn Store>,
    pub flush_interval: Duration,
    /// How long flushes may keep failing before new holds are refused.
    pub max_flush_failure: Duration,
    /// Unique per process: makes entry and batch ids unique across restarts.
    pub nonce: u64,
}

pub struct WalletState {
    args: WalletArgs,
    ledger: Ledger,
    holds: HashMap<u64, Nanos>,
    pending: Vec<LedgerEntry>,
    /// A batch whose write failed: resent as it is, same id, so a write
    /// that did land but whose answer was lost applies once.
    retry: Option<WalletBatch>,
    inflight: bool,
    flush_scheduled: bool,
    failing_since: Option<Instant>,
    batch_seq: u64,
    waiters: Vec<RpcReplyPort<Result<(), WalletError>>>,
}

impl WalletState {
    fn view(&self) -> WalletView {
        WalletView {
            paid: self.ledger.paid,
            promo: self.ledger.promo,
            held: self.ledger.held,
            suspended: self.ledger.suspended(),
        }
    }

    /// Publish `suspended` after every balance change (B2, B3).
    fn publish(&self) {
        let now = self.ledger.suspended();
        let before = self.args.shared.suspended.swap(now, Ordering::AcqRel);
        if before != now {
            crate::metrics::wallet_suspension(now);
            tracing::info!(wallet = %self.args.wallet_id, suspended = now, "wallet suspension changed");
        }
    }

    fn flush_overdue(&self) -> bool {
        self.failing_since
            .is_some_and(|t| t.elapsed() >= self.args.max_flush_failure)
    }

    fn schedule_flush(&mut self, myself: &ActorRef<WalletMsg>, after: Duration) {
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            myself.send_after(after, || WalletMsg::Flush);
        }
    }

    fn start_flush(&mut self, myself: &ActorRef<WalletMsg>) {
        if self.inflight || (self.pending.is_empty() && self.retry.is_none()) {
            return;
        }
        self.inflight = true;
        let batch = match self.retry.take() {
            Some(batch) => batch,
            None => {
                self.batch_seq += 1;
                WalletBatch {
                    batch_id: format!(
                        "{}:{:016x}:{}",
                        self.args.wallet_id, self.args.nonce, self.batch_seq
                    ),
                    wallet_id: self.args.wallet_id.to_string(),
                    entries: std::mem::take(&mut self.pending),
                }
            }
        };
        let store = self.args.store.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let ok = match store.apply(&batch).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(wallet = %batch.wallet_id, error = %e, "wallet flush failed; will retry");
                    false
                }
            };
            let _ = me.cast(WalletMsg::FlushDone { batch, ok });
        });
    }

    fn answer_waiters_if_flushed(&mut self) {
        if !self.inflight && self.pending.is_empty() && self.retry.is_none() {
            for w in self.waiters.drain(..) {
                let _ = w.send(Ok(()));
            }
        }
    }
}

pub struct WalletActor;

impl Actor for WalletActor {
    type Msg = WalletMsg;
    type State = WalletState;
    type Arguments = WalletArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<WalletMsg>,
        args: WalletArgs,
    ) -> Result<WalletState, ActorProcessingErr> {
        let state = WalletState {
            ledger: args.ledger,
            args,
            holds: HashMap::new(),
            pending: Vec::new(),
            retry: None,
            inflight: false,
            flush_scheduled: false,
            failing_since: None,
            batch_seq: 0,
            waiters: Vec::new(),
        };
        state
            .args
            .shared
            .suspended
            .store(state.ledger.suspended(), Ordering::Release);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<WalletMsg>,
        msg: WalletMsg,
        state: &mut WalletState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WalletMsg::Hold {
                request_id,
                amount,
                reply_to,
            } => {
                let result = if state.flush_overdue() {
                    Err(WalletError::Unavailable)
                } else {
                    state.ledger.hold(amount)
                };
                if result.is_ok() {
                    state.holds.insert(request_id, amount);
                }
                let _ = reply_to.send(result);
            }
            WalletMsg::Settle {
                request_id,
                cost,
                reference,
                facts,
            } => {
                let held = state.holds.remove(&request_id).unwrap_or(Nanos::ZERO);
                let debit = state.ledger.settle(held, cost);
                state.pending.push(LedgerEntry {
                    id: format!("stl:{:016x}:{request_id}", state.args.nonce),
                    wallet_id: state.args.wallet_id.to_string(),
                    kind: EntryKind::Settlement,
                    paid: Nanos::ZERO - debit.paid,
                    promo: Nanos::ZERO - debit.promo,
                    at: Utc::now(),
                    reference,
                    usage: Some(*facts),
                });
                state.publish();
                let interval = state.args.flush_interval;
                state.schedule_flush(&myself, interval);
            }
            WalletMsg::Release { request_id } => {
                if let Some(held) = state.holds.remove(&request_id) {
                    state.ledger.release(held);
                }
            }
            WalletMsg::Credit { entry, reply_to } => {
                let store = state.args.store.clone();
                let me = myself.clone();
                tokio::spawn(async move {
                    let batch = WalletBatch {
                        batch_id: entry.id.clone(),
                        wallet_id: entry.wallet_id.clone(),
                        entries: vec![(*entry).clone()],
                    };
                    let result = store.apply(&batch).await.map(|(a, _)| a).map_err(|e| {
                        tracing::warn!(wallet = %batch.wallet_id, error = %e, "credit not persisted");
                    });
                    let _ = me.cast(WalletMsg::CreditDone {
                        entry,
                        result,
                        reply_to,
                    });
                });
            }
            WalletMsg::CreditDone {
                entry,
                result,
                reply_to,
            } => {
                let answer = match result {
                    Ok(Applied::Now) => {
                        let applied = state
                            .ledger
                            .credit(Part::Paid, entry.paid)
                            .and_then(|_| state.ledger.credit(Part::Promo, entry.promo));
                        state.publish();
                        applied.map(|_| Credited {
                            view: state.view(),
                            applied_now: true,
                        })
                    }
                    Ok(Applied::Before) => Ok(Credited {
                        view: state.view(),
                        applied_now: false,
                    }),
                    Err(()) => Err(WalletError::Unavailable),
                };
                let _ = reply_to.send(answer);
            }
            WalletMsg::Snapshot { reply_to } => {
                let _ = reply_to.send(state.view());
            }
            WalletMsg::FlushNow { reply_to } => {
                state.waiters.push(reply_to);
                state.start_flush(&myself);
                state.answer_waiters_if_flushed();
            }
            WalletMsg::Flush => {
                state.flush_scheduled = false;
                state.start_flush(&myself);
            }
            WalletMsg::FlushDone { batch, ok } => {
                state.inflight = false;
                if ok {
                    state.failing_since = None;
                    state.answer_waiters_if_flushed();
                    if !state.pending.is_empty() {
                        let interval = state.args.flush_interval;
                        state.schedule_flush(&myself, interval);
                    }
                } else {
                    state.failing_since.get_or_insert_with(Instant::now);
                    state.retry = Some(batch);
                    let backoff = (state.args.flush_interval * 10).min(Duration::from_millis(500));
                    state.schedule_flush(&myself, backoff);
                }
            }
        }
        Ok(())
    }
}
