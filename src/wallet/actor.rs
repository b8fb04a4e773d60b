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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::ledger::{Ledger, WalletError};
use crate::clock::Clock;
use crate::money::Nanos;
use crate::store::{
    Applied, Change, EntryKind, EventRecord, LedgerEntry, Part, Store, UsageFacts, WalletBalance,
    WalletBatch,
};

/// What the hot path reads without messaging the actor (B2).
#[derive(Debug, Default)]
pub struct WalletShared {
    pub suspended: AtomicBool,
    /// The last batch number used. Here, not in the actor's state, so an
    /// actor restarted after an idle stop does not reuse a batch id (the
    /// store would take the new batch for a replay and drop it).
    pub batch_seq: AtomicU64,
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

/// How much a transfer out takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithdrawRule {
    /// T3, I5: the positive paid balance net of outstanding holds.
    MovablePaid,
    /// D1: everything left (the wallet is closed, no holds remain).
    Everything,
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
    /// A transfer out under `entry_id`: taken from memory at once (so no
    /// hold can spend it), durable before the reply. A retry with the same
    /// id answers the amount first taken.
    Withdraw {
        entry_id: String,
        rule: WithdrawRule,
        reference: String,
        reply_to: RpcReplyPort<Result<Nanos, WalletError>>,
    },
    WithdrawDone {
        entry: Box<LedgerEntry>,
        /// The amount the store holds for this entry id, or an error.
        result: Result<(Applied, Nanos), ()>,
        reply_to: RpcReplyPort<Result<Nanos, WalletError>>,
    },
    /// D1: refuse new holds; answer once every outstanding hold settled.
    Close {
        reply_to: RpcReplyPort<()>,
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
        /// The stored balance after the batch, or `None` if it failed.
        stored: Option<WalletBalance>,
    },
    /// The registry's idle sweep (`WalletRegistry::stop_idle`): stop if
    /// nothing was asked of this wallet for `idle_after` and nothing is
    /// held, unwritten or on its way to the store; answers whether it stops.
    StopIfIdle {
        idle_after: Duration,
        reply_to: RpcReplyPort<bool>,
    },
    /// Another instance changed the stored balance: re-read it.
    Resync,
    ResyncDone {
        stored: WalletBalance,
        seq: u64,
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
    pub clock: Arc<dyn Clock>,
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
    waiters: Vec<RpcReplyPort<Result<(), WalletError>>>,
    closed: bool,
    close_waiters: Vec<RpcReplyPort<()>>,
    /// Credits and withdrawals on their way to the store.
    money_inflight: u32,
    /// `seq` when the flush in the air started: its stored balance is
    /// adopted only if no other write happened since.
    flush_seq: u64,
    /// Bumped by every write this actor makes to the store; a balance read
    /// at another seq may miss one and is not adopted.
    seq: u64,
    /// When the last message other than an idle check arrived.
    last_active: Instant,
    /// Whether any message other than an idle check arrived yet.
    used: bool,
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
            if let Some(team_id) = self.args.wallet_id.strip_prefix("team:") {
                // B2, B3: the team's event log; written off the mailbox.
                let event = EventRecord {
                    id: crate::ids::new_id("evt"),
                    team_id: team_id.to_string(),
                    kind: if now {
                        "team.suspended"
                    } else {
                        "team.resumed"
                    }
                    .into(),
                    at: self.args.clock.now(),
                    data: serde_json::json!({"balance": self.ledger.balance()}),
                };
                let store = self.args.store.clone();
                tokio::spawn(async move {
                    if let Err(e) = store.append_event(&event).await {
                        tracing::warn!(error = %e, "team event not recorded");
                    }
                });
            }
        }
    }

    /// With several instances on one store, each actor's balance drifts by
    /// the others' spend. Adopt the stored balance plus what is settled here
    /// but not yet written (`pending`, exactly known), whenever no other
    /// write is in the air and nothing was persisted since `stored` was read
    /// (`seq`). Every successful flush does this, so a wallet served by
    /// several instances converges every flush interval.
    fn adopt(&mut self, stored: WalletBalance, seq: u64) -> bool {
        let settled =
            !self.inflight && self.retry.is_none() && self.money_inflight == 0 && self.seq == seq;
        if settled {
            let unwritten: (Nanos, Nanos) = self
                .pending
                .iter()
                .fold((Nanos::ZERO, Nanos::ZERO), |(p, q), e| {
                    (p + e.paid, q + e.promo)
                });
            self.ledger.paid = stored.paid + unwritten.0;
            self.ledger.promo = stored.promo + unwritten.1;
            self.publish();
        }
        settled
    }

    fn answer_close_waiters(&mut self) {
        if self.closed && self.holds.is_empty() {
            for w in self.close_waiters.drain(..) {
                let _ = w.send(());
            }
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
        self.flush_seq = self.seq;
        let batch = match self.retry.take() {
            Some(batch) => batch,
            None => {
                let batch_seq = self.args.shared.batch_seq.fetch_add(1, Ordering::Relaxed) + 1;
                WalletBatch {
                    batch_id: format!(
                        "{}:{:016x}:{}",
                        self.args.wallet_id, self.args.nonce, batch_seq
                    ),
                    wallet_id: self.args.wallet_id.to_string(),
                    entries: std::mem::take(&mut self.pending),
                }
            }
        };
        let store = self.args.store.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let stored = match store.apply(&batch).await {
                Ok((_, after)) => {
                    // Other instances running this wallet re-read it (a
                    // no-op on a single-process store).
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
            };
            let _ = me.cast(WalletMsg::FlushDone { batch, stored });
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
            waiters: Vec::new(),
            closed: false,
            close_waiters: Vec::new(),
            money_inflight: 0,
            flush_seq: 0,
            seq: 0,
            last_active: Instant::now(),
            used: false,
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
        if let WalletMsg::StopIfIdle {
            idle_after,
            reply_to,
        } = msg
        {
            // A fresh actor was started for a message that may still be on
            // its way: it is not idle before it handled one.
            let idle = state.used
                && state.last_active.elapsed() >= idle_after
                && state.holds.is_empty()
                && state.pending.is_empty()
                && state.retry.is_none()
                && !state.inflight
                && state.money_inflight == 0
                && state.waiters.is_empty()
                // A closing wallet keeps its `closed` flag in memory only.
                && !state.closed
                && state.close_waiters.is_empty();
            let _ = reply_to.send(idle);
            if idle {
                myself.stop(Some("idle".into()));
            }
            return Ok(());
        }
        state.last_active = Instant::now();
        state.used = true;
        match msg {
            WalletMsg::StopIfIdle { .. } => {}
            WalletMsg::Hold {
                request_id,
                amount,
                reply_to,
            } => {
                let result = if state.closed {
                    Err(WalletError::Closed)
                } else if state.flush_overdue() {
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
                    id: settlement_id(state.args.nonce, request_id),
                    wallet_id: state.args.wallet_id.to_string(),
                    kind: EntryKind::Settlement,
                    paid: Nanos::ZERO - debit.paid,
                    promo: Nanos::ZERO - debit.promo,
                    at: state.args.clock.now(),
                    reference,
                    usage: Some(*facts),
                });
                state.publish();
                let interval = state.args.flush_interval;
                state.schedule_flush(&myself, interval);
                state.answer_close_waiters();
            }
            WalletMsg::Release { request_id } => {
                if let Some(held) = state.holds.remove(&request_id) {
                    state.ledger.release(held);
                }
                state.answer_close_waiters();
            }
            WalletMsg::Close { reply_to } => {
                state.closed = true;
                state.close_waiters.push(reply_to);
                state.answer_close_waiters();
            }
            WalletMsg::Withdraw {
                entry_id,
                rule,
                reference,
                reply_to,
            } => {
                let (paid, promo) = match rule {
                    WithdrawRule::MovablePaid => (state.ledger.movable_paid(), Nanos::ZERO),
                    // Holds still open (a request outlasting the close
                    // wait) keep their reserve here to settle against.
                    WithdrawRule::Everything => {
                        let promo = state.ledger.promo;
                        let reserve = (state.ledger.held - promo.max(Nanos::ZERO)).max(Nanos::ZERO);
                        let paid = if reserve.is_positive() {
                            (state.ledger.paid - reserve).max(Nanos::ZERO)
                        } else {
                            state.ledger.paid
                        };
                        (paid, promo)
                    }
                };
                // Taken now: holds admitted from here on cannot spend it.
                state.money_inflight += 1;
                state.seq += 1;
                state.ledger.paid -= paid;
                state.ledger.promo -= promo;
                state.publish();
                let entry = Box::new(LedgerEntry {
                    id: entry_id,
                    wallet_id: state.args.wallet_id.to_string(),
                    kind: EntryKind::TransferOut,
                    paid: Nanos::ZERO - paid,
                    promo: Nanos::ZERO - promo,
                    at: state.args.clock.now(),
                    reference,
                    usage: None,
                });
                let store = state.args.store.clone();
                let me = myself.clone();
                tokio::spawn(async move {
                    let batch = WalletBatch::single(&entry);
                    let result = match store.apply(&batch).await {
                        Ok((Applied::Now, _)) => Ok((Applied::Now, Nanos::ZERO - entry.amount())),
                        Ok((Applied::Before, _)) => {
                            match store.ledger_entry(&entry.wallet_id, &entry.id).await {
                                Ok(Some(first)) => {
                                    Ok((Applied::Before, Nanos::ZERO - first.amount()))
                                }
                                _ => Err(()),
                            }
                        }
                        Err(e) => {
                            tracing::warn!(wallet = %entry.wallet_id, error = %e, "transfer out not persisted");
                            Err(())
                        }
                    };
                    let _ = me.cast(WalletMsg::WithdrawDone {
                        entry,
                        result,
                        reply_to,
                    });
                });
            }
            WalletMsg::WithdrawDone {
                entry,
                result,
                reply_to,
            } => {
                state.money_inflight -= 1;
                state.seq += 1;
                let answer = match result {
                    Ok((Applied::Now, amount)) => Ok(amount),
                    Ok((Applied::Before, amount)) => {
                        // Applied by an earlier run: the balance loaded from
                        // the store has it already. Give back what we took.
                        state.ledger.paid -= entry.paid;
                        state.ledger.promo -= entry.promo;
                        Ok(amount)
                    }
                    Err(()) => {
                        state.ledger.paid -= entry.paid;
                        state.ledger.promo -= entry.promo;
                        Err(WalletError::Unavailable)
                    }
                };
                state.publish();
                let _ = reply_to.send(answer);
            }
            WalletMsg::Credit { reply_to, .. } if state.closed => {
                // A deleted team's wallet takes no more money (D1).
                let _ = reply_to.send(Err(WalletError::Closed));
            }
            WalletMsg::Credit { entry, reply_to } => {
                state.money_inflight += 1;
                state.seq += 1;
                let store = state.args.store.clone();
                let me = myself.clone();
                tokio::spawn(async move {
                    let batch = WalletBatch::single(&entry);
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
                state.money_inflight -= 1;
                state.seq += 1;
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
            WalletMsg::Resync if state.inflight => {
                // The read could race the write in the air; the flush's own
                // answer carries the stored balance anyway.
            }
            WalletMsg::Resync => {
                let store = state.args.store.clone();
                let id = state.args.wallet_id.clone();
                let (me, seq) = (myself.clone(), state.seq);
                tokio::spawn(async move {
                    if let Ok(stored) = store.wallet(&id).await {
                        let _ = me.cast(WalletMsg::ResyncDone { stored, seq });
                    }
                });
            }
            WalletMsg::ResyncDone { stored, seq } => {
                if !state.adopt(stored, seq) {
                    // Something was written meanwhile: read again.
                    let interval = state.args.flush_interval;
                    myself.send_after(interval, || WalletMsg::Resync);
                }
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
            WalletMsg::FlushDone { batch, stored } => {
                state.inflight = false;
                if let Some(stored) = stored {
                    state.failing_since = None;
                    let started = state.flush_seq;
                    state.adopt(stored, started);
                    state.seq += 1;
                    state.answer_waiters_if_flushed();
                    if !state.pending.is_empty() {
                        let interval = state.args.flush_interval;
                        state.schedule_flush(&myself, interval);
                    }
                } else {
                    state.seq += 1;
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

/// `stl:{nonce:016x}:{request_id}`, the settlement's ledger id, built
/// without `format!` (it runs on every settlement).
fn settlement_id(nonce: u64, request_id: u64) -> String {
    let mut s = String::with_capacity(4 + 16 + 1 + 20);
    s.push_str("stl:");
    crate::ids::push_hex(&mut s, nonce, 16);
    s.push(':');
    s.push_str(itoa::Buffer::new().format(request_id));
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn settlement_ids_read_as_before() {
        for (nonce, id) in [
            (0u64, 0u64),
            (0xabc, 1),
            (u64::MAX, u64::MAX),
            (7, 1_000_000),
        ] {
            assert_eq!(
                super::settlement_id(nonce, id),
                format!("stl:{nonce:016x}:{id}")
            );
        }
    }
}
