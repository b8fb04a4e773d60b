//! WalletActor: the single writer of one wallet's balance. A thin shell
//! around `Ledger` (the math, ledger.rs) that serialises holds,
//! settlements and credits, keeps the `suspended` flag the hot path reads,
//! and persists its changes to the store in batches. `handle` only
//! dispatches: each message has its own `handle_*` method below.
//!
//! Persistence never blocks the mailbox: a flush is a background task
//! (persist.rs, on the registry's tracker) that reports back with
//! `FlushDone`, so holds keep being answered while Redis is written.
//! Credits (deposits, transfers in) go the other way round: they are
//! written first and applied to memory only once durable, so money never
//! appears that the store does not have.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio_util::task::TaskTracker;

use super::ledger::{Ledger, WalletError, WithdrawRule};
use super::persist;
use super::state::{settlement_id, Credited, State, WalletShared, WalletView};
use crate::clock::Clock;
use crate::limits::Charge;
use crate::money::Nanos;
use crate::store::{
    Applied, EntryKind, LedgerEntry, Store, UsageFacts, WalletBalance, WalletBatch,
};

/// A wallet actor's address.
pub type WalletRef = ActorRef<Msg>;

pub enum Msg {
    Hold {
        request_id: u64,
        amount: Nanos,
        /// Q1: the key and member it is charged to, with their spend
        /// rules (wallet/limits.rs); `None` for an uncharged hold.
        charge: Option<Charge>,
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
    /// N2: the wallet's low-balance thresholds changed (wallet/alerts.rs).
    SetAlerts(Vec<Nanos>),
    /// Q1 across instances: re-read the day buckets the spend limits count
    /// (wallet/limits.rs); only while some limit applies here.
    ResyncLimits,
    LimitsRead {
        /// `None`: the read failed (tried again later).
        rows: Option<Vec<crate::store::UsageRow>>,
        from: chrono::NaiveDate,
    },
    ResyncDone {
        stored: WalletBalance,
        seq: u64,
    },
    CreditDone {
        entry: Box<LedgerEntry>,
        result: Result<Applied, WalletError>,
        reply_to: RpcReplyPort<Result<Credited, WalletError>>,
    },
}

pub struct Args {
    pub wallet_id: Arc<str>,
    /// The team whose wallet this is, if it is one: its suspension changes
    /// go to that team's event log (B2, B3).
    pub team_id: Option<Arc<str>>,
    pub ledger: Ledger,
    pub shared: Arc<WalletShared>,
    pub store: Arc<dyn Store>,
    pub flush_interval: Duration,
    /// How long flushes may keep failing before new holds are refused.
    pub max_flush_failure: Duration,
    /// Unique per process: makes entry and batch ids unique across restarts.
    pub nonce: u64,
    pub clock: Arc<dyn Clock>,
    /// The registry's tracker: every store write runs on it, so shutdown
    /// can wait for them.
    pub tasks: TaskTracker,
    /// Q1: the spend of this wallet's keys and members (wallet/limits.rs).
    pub book: super::limits::LimitBook,
    /// N2: low-balance thresholds (wallet/alerts.rs).
    pub alerts: super::alerts::AlertBook,
}

pub struct WalletActor;

impl Actor for WalletActor {
    type Msg = Msg;
    type State = State;
    type Arguments = Args;

    async fn pre_start(&self, _myself: WalletRef, args: Args) -> Result<State, ActorProcessingErr> {
        Ok(State::new(args))
    }

    async fn handle(
        &self,
        myself: WalletRef,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        if let Msg::StopIfIdle {
            idle_after,
            reply_to,
        } = msg
        {
            state.handle_stop_if_idle(&myself, idle_after, reply_to);
            return Ok(());
        }
        state.last_active = Instant::now();
        state.used = true;
        match msg {
            Msg::StopIfIdle { .. } => {}
            Msg::Hold {
                request_id,
                amount,
                charge,
                reply_to,
            } => state.handle_hold(request_id, amount, charge.as_ref(), reply_to),
            Msg::Settle {
                request_id,
                cost,
                reference,
                facts,
            } => state.handle_settle(&myself, request_id, cost, reference, *facts),
            Msg::Release { request_id } => state.handle_release(request_id),
            Msg::Close { reply_to } => state.handle_close(reply_to),
            Msg::Withdraw {
                entry_id,
                rule,
                reference,
                reply_to,
            } => state.handle_withdraw(&myself, entry_id, rule, reference, reply_to),
            Msg::WithdrawDone {
                entry,
                result,
                reply_to,
            } => state.handle_withdraw_done(&entry, result, reply_to),
            Msg::Credit { entry, reply_to } => state.handle_credit(&myself, entry, reply_to),
            Msg::CreditDone {
                entry,
                result,
                reply_to,
            } => state.handle_credit_done(&entry, result, reply_to),
            Msg::Resync => state.handle_resync(&myself),
            Msg::SetAlerts(t) => {
                let balance = state.ledger.balance();
                state.alerts.set(&t, balance);
            }
            Msg::ResyncLimits => state.handle_resync_limits(&myself),
            Msg::LimitsRead { rows, from } => {
                state.handle_limits_read(&myself, rows.as_deref(), from);
            }
            Msg::ResyncDone { stored, seq } => state.handle_resync_done(&myself, stored, seq),
            Msg::Snapshot { reply_to } => state.handle_snapshot(reply_to),
            Msg::FlushNow { reply_to } => state.handle_flush_now(&myself, reply_to),
            Msg::Flush => state.handle_flush(&myself),
            Msg::FlushDone { batch, stored } => state.handle_flush_done(&myself, batch, stored),
        }
        Ok(())
    }
}

/// One method per message. None awaits: store work is spawned on the
/// tracker and comes back as a `*Done` message.
impl State {
    fn handle_stop_if_idle(
        &mut self,
        myself: &WalletRef,
        idle_after: Duration,
        reply_to: RpcReplyPort<bool>,
    ) {
        let idle = self.is_idle(idle_after);
        let _ = reply_to.send(idle);
        if idle {
            myself.stop(Some("idle".into()));
        }
    }

    fn handle_hold(
        &mut self,
        request_id: u64,
        amount: Nanos,
        charge: Option<&Charge>,
        reply_to: RpcReplyPort<Result<(), WalletError>>,
    ) {
        let result = if self.closed {
            Err(WalletError::Closed)
        } else if self.flush_overdue() {
            Err(WalletError::Unavailable)
        } else {
            // Q1: limits and balance in one step (wallet/limits.rs).
            self.limited_hold(request_id, amount, charge)
        };
        if result.is_ok() {
            self.holds.insert(request_id, amount);
        }
        let _ = reply_to.send(result);
    }

    fn handle_settle(
        &mut self,
        myself: &WalletRef,
        request_id: u64,
        cost: Nanos,
        reference: String,
        facts: UsageFacts,
    ) {
        let held = self.holds.remove(&request_id).unwrap_or(Nanos::ZERO);
        let debit = self.ledger.settle(held, cost);
        self.settle_limits(request_id, cost, &facts);
        self.pending.push(LedgerEntry {
            id: settlement_id(self.args.nonce, request_id),
            wallet_id: self.args.wallet_id.to_string(),
            kind: EntryKind::Settlement,
            paid: Nanos::ZERO - debit.paid,
            promo: Nanos::ZERO - debit.promo,
            at: self.args.clock.now(),
            reference,
            usage: Some(facts),
        });
        self.publish();
        let interval = self.args.flush_interval;
        self.schedule_flush(myself, interval);
        self.answer_close_waiters();
    }

    fn handle_release(&mut self, request_id: u64) {
        if let Some(held) = self.holds.remove(&request_id) {
            self.ledger.release(held);
        }
        self.book.release(request_id);
        self.answer_close_waiters();
    }

    fn handle_close(&mut self, reply_to: RpcReplyPort<()>) {
        self.closed = true;
        self.close_waiters.push(reply_to);
        self.answer_close_waiters();
    }

    fn handle_withdraw(
        &mut self,
        myself: &WalletRef,
        entry_id: String,
        rule: WithdrawRule,
        reference: String,
        reply_to: RpcReplyPort<Result<Nanos, WalletError>>,
    ) {
        let taken = self.ledger.withdrawal(rule);
        // Taken now: holds admitted from here on cannot spend it.
        self.money_inflight += 1;
        self.seq += 1;
        self.ledger.take(taken);
        self.publish();
        let entry = Box::new(LedgerEntry {
            id: entry_id,
            wallet_id: self.args.wallet_id.to_string(),
            kind: EntryKind::TransferOut,
            paid: Nanos::ZERO - taken.paid,
            promo: Nanos::ZERO - taken.promo,
            at: self.args.clock.now(),
            reference,
            usage: None,
        });
        let store = self.args.store.clone();
        let me = myself.clone();
        self.args.tasks.spawn(async move {
            let result = persist::withdraw(&*store, &entry).await;
            let _ = me.cast(Msg::WithdrawDone {
                entry,
                result,
                reply_to,
            });
        });
    }

    fn handle_withdraw_done(
        &mut self,
        entry: &LedgerEntry,
        result: Result<(Applied, Nanos), ()>,
        reply_to: RpcReplyPort<Result<Nanos, WalletError>>,
    ) {
        self.money_inflight -= 1;
        self.seq += 1;
        let answer = match result {
            Ok((Applied::Now, amount)) => Ok(amount),
            Ok((Applied::Before, amount)) => {
                // Applied by an earlier run: the balance loaded from the
                // store has it already. Give back what we took.
                self.ledger.give_back(entry.paid, entry.promo);
                Ok(amount)
            }
            Err(()) => {
                self.ledger.give_back(entry.paid, entry.promo);
                Err(WalletError::Unavailable)
            }
        };
        self.publish();
        let _ = reply_to.send(answer);
    }

    fn handle_credit(
        &mut self,
        myself: &WalletRef,
        entry: Box<LedgerEntry>,
        reply_to: RpcReplyPort<Result<Credited, WalletError>>,
    ) {
        if self.closed {
            // A deleted team's wallet takes no more money (D1).
            let _ = reply_to.send(Err(WalletError::Closed));
            return;
        }
        // B10, before anything is written: the balance plus every credit
        // already on its way to the store plus this one stays in i64. (A
        // cheap check on a rare path; settlements need none: a cost never
        // exceeds its hold, so a debit only lowers a balance that was in
        // range, and a release only frees what a hold reserved.)
        let (paid, promo) = self.credits_inflight;
        let (paid, promo) = (
            paid + i128::from(entry.paid.0),
            promo + i128::from(entry.promo.0),
        );
        if let Err(e) = self.ledger.fits(paid, promo) {
            let _ = reply_to.send(Err(e));
            return;
        }
        self.credits_inflight = (paid, promo);
        self.money_inflight += 1;
        self.seq += 1;
        let store = self.args.store.clone();
        let me = myself.clone();
        self.args.tasks.spawn(async move {
            let result = persist::credit(&*store, &entry).await;
            let _ = me.cast(Msg::CreditDone {
                entry,
                result,
                reply_to,
            });
        });
    }

    fn handle_credit_done(
        &mut self,
        entry: &LedgerEntry,
        result: Result<Applied, WalletError>,
        reply_to: RpcReplyPort<Result<Credited, WalletError>>,
    ) {
        self.money_inflight -= 1;
        self.credits_inflight.0 -= i128::from(entry.paid.0);
        self.credits_inflight.1 -= i128::from(entry.promo.0);
        self.seq += 1;
        let answer = match result {
            Ok(Applied::Now) => {
                let applied = self.ledger.credit_both(entry.paid, entry.promo);
                self.publish();
                applied.map(|_| Credited {
                    view: self.view(),
                    applied_now: true,
                })
            }
            Ok(Applied::Before) => Ok(Credited {
                view: self.view(),
                applied_now: false,
            }),
            Err(e) => Err(e),
        };
        let _ = reply_to.send(answer);
    }

    fn handle_resync(&mut self, myself: &WalletRef) {
        if self.inflight {
            // The read could race the write in the air; read once that
            // write is answered (its answer may predate the other write).
            self.resync_after_flush = true;
            return;
        }
        let store = self.args.store.clone();
        let id = self.args.wallet_id.clone();
        let (me, seq) = (myself.clone(), self.seq);
        self.args.tasks.spawn(async move {
            if let Ok(stored) = store.wallet(&id).await {
                let _ = me.cast(Msg::ResyncDone { stored, seq });
            }
        });
    }

    fn handle_resync_done(&mut self, myself: &WalletRef, stored: WalletBalance, seq: u64) {
        if !self.adopt(stored, seq) {
            // Something was written meanwhile: read again.
            let interval = self.args.flush_interval;
            myself.send_after(interval, || Msg::Resync);
        }
    }

    fn handle_snapshot(&mut self, reply_to: RpcReplyPort<WalletView>) {
        let _ = reply_to.send(self.view());
    }

    fn handle_flush_now(
        &mut self,
        myself: &WalletRef,
        reply_to: RpcReplyPort<Result<(), WalletError>>,
    ) {
        self.waiters.push(reply_to);
        self.start_flush(myself);
        self.answer_waiters_if_flushed();
    }

    fn handle_flush(&mut self, myself: &WalletRef) {
        self.flush_scheduled = false;
        self.start_flush(myself);
    }

    fn handle_flush_done(
        &mut self,
        myself: &WalletRef,
        batch: WalletBatch,
        stored: Option<WalletBalance>,
    ) {
        self.inflight = false;
        if std::mem::take(&mut self.resync_after_flush) {
            let _ = myself.cast(Msg::Resync);
        }
        if let Some(stored) = stored {
            self.failing_since = None;
            let started = self.flush_seq;
            self.adopt(stored, started);
            self.seq += 1;
            self.answer_waiters_if_flushed();
            if !self.pending.is_empty() {
                let interval = self.args.flush_interval;
                self.schedule_flush(myself, interval);
            }
        } else {
            self.seq += 1;
            self.failing_since.get_or_insert_with(Instant::now);
            self.retry = Some(batch);
            let backoff = (self.args.flush_interval * 10).min(Duration::from_millis(500));
            self.schedule_flush(myself, backoff);
        }
    }
}
