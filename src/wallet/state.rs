//! What a wallet actor keeps between messages (`State`) and what it shares
//! with the hot path without messaging (`WalletShared`), with the
//! bookkeeping every handler uses: publishing `suspended`, adopting a
//! stored balance, starting a flush, answering waiters. The handlers
//! themselves are in actor.rs, the money math in ledger.rs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ractor::RpcReplyPort;

use super::actor::{Args, Msg, WalletRef};
use super::ledger::{Ledger, WalletError};
use super::persist;
use crate::money::Nanos;
use crate::store::{BatchSeq, EventRecord, LedgerEntry, WalletBalance, WalletBatch};

/// What the hot path reads without messaging the actor (B2).
#[derive(Debug, Default)]
pub struct WalletShared {
    pub suspended: AtomicBool,
    /// The last batch number used. Here, not in the actor's state, so an
    /// actor restarted after an idle stop does not reuse a batch id (the
    /// store would take the new batch for a replay and drop it).
    pub batch_seq: AtomicU64,
    /// N3: a team wallet being funded at its creation: the first
    /// resumption is its funding, not news, and is not logged.
    pub fresh: AtomicBool,
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

/// A team wallet's suspension changing, as its event log names it (B2, B3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TeamEvent {
    Suspended,
    Resumed,
}

impl TeamEvent {
    fn kind(self) -> &'static str {
        match self {
            TeamEvent::Suspended => "team.suspended",
            TeamEvent::Resumed => "team.resumed",
        }
    }

    /// N3: the same change of a personal wallet.
    fn personal_kind(self) -> &'static str {
        match self {
            TeamEvent::Suspended => "wallet.suspended",
            TeamEvent::Resumed => "wallet.resumed",
        }
    }
}

pub struct State {
    pub(super) args: Args,
    pub(super) ledger: Ledger,
    pub(super) holds: HashMap<u64, Nanos>,
    pub(super) pending: Vec<LedgerEntry>,
    /// A batch whose write failed: resent as it is, same id, so a write
    /// that did land but whose answer was lost applies once.
    pub(super) retry: Option<WalletBatch>,
    pub(super) inflight: bool,
    /// Another instance announced a write while our flush was in the air:
    /// re-read the balance once that flush is done (its own answer may
    /// predate the other write).
    pub(super) resync_after_flush: bool,
    pub(super) flush_scheduled: bool,
    pub(super) failing_since: Option<Instant>,
    pub(super) waiters: Vec<RpcReplyPort<Result<(), WalletError>>>,
    pub(super) closed: bool,
    pub(super) close_waiters: Vec<RpcReplyPort<()>>,
    /// Credits and withdrawals on their way to the store.
    pub(super) money_inflight: u32,
    /// Paid and promo of the credits on their way to the store, counted
    /// in the range check of the next credit (B10).
    pub(super) credits_inflight: (i128, i128),
    /// `seq` when the flush in the air started: its stored balance is
    /// adopted only if no other write happened since.
    pub(super) flush_seq: u64,
    /// Bumped by every write this actor makes to the store; a balance read
    /// at another seq may miss one and is not adopted.
    pub(super) seq: u64,
    /// When the last message other than an idle check arrived.
    pub(super) last_active: Instant,
    /// Whether any message other than an idle check arrived yet.
    pub(super) used: bool,
    /// Q1: per key and member spend and holds (wallet/limits.rs).
    pub(super) book: super::limits::LimitBook,
    /// N2: low-balance thresholds (wallet/alerts.rs).
    pub(super) alerts: super::alerts::AlertBook,
}

impl State {
    pub(super) fn new(mut args: Args) -> State {
        let book = std::mem::take(&mut args.book);
        let alerts = std::mem::take(&mut args.alerts);
        let state = State {
            book,
            alerts,
            ledger: args.ledger,
            args,
            holds: HashMap::new(),
            pending: Vec::new(),
            retry: None,
            inflight: false,
            resync_after_flush: false,
            flush_scheduled: false,
            failing_since: None,
            waiters: Vec::new(),
            closed: false,
            close_waiters: Vec::new(),
            money_inflight: 0,
            credits_inflight: (0, 0),
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
        state
    }

    pub(super) fn view(&self) -> WalletView {
        WalletView {
            paid: self.ledger.paid,
            promo: self.ledger.promo,
            held: self.ledger.held,
            suspended: self.ledger.suspended(),
        }
    }

    /// Publish `suspended` after every balance change (B2, B3), and check
    /// the low-balance thresholds (N2).
    pub(super) fn publish(&mut self) {
        let now = self.ledger.suspended();
        let before = self.args.shared.suspended.swap(now, Ordering::AcqRel);
        if before != now {
            crate::metrics::wallet_suspension(now);
            tracing::info!(wallet = %self.args.wallet_id, suspended = now, "wallet suspension changed");
            let kind = if now {
                TeamEvent::Suspended
            } else {
                TeamEvent::Resumed
            };
            let funding = !now && self.args.shared.fresh.swap(false, Ordering::AcqRel);
            if !funding {
                self.record_team_event(kind);
            }
        }
        let balance = self.ledger.balance();
        let mut fired: Option<Vec<Nanos>> = None;
        self.alerts
            .check(balance, |t| fired.get_or_insert_with(Vec::new).push(t));
        for threshold in fired.into_iter().flatten() {
            let event = super::alerts::low_event(
                &self.args.wallet_id,
                self.args.team_id.as_deref(),
                threshold,
                balance,
                self.args.clock.now(),
            );
            self.spawn_event(event);
        }
    }

    /// B2, B3: the team's event log (`team.suspended` / `team.resumed`);
    /// for a personal wallet, N3's `wallet.suspended` / `wallet.resumed`
    /// under the wallet's id (`user:ID`). Written off the mailbox.
    fn record_team_event(&self, kind: TeamEvent) {
        let (team_id, kind, data) = match &self.args.team_id {
            Some(team_id) => (
                team_id.to_string(),
                kind.kind(),
                serde_json::json!({"balance": self.ledger.balance()}),
            ),
            None => (
                self.args.wallet_id.to_string(),
                kind.personal_kind(),
                serde_json::json!({
                    "user_id": self.args.wallet_id.strip_prefix("user:").unwrap_or(&self.args.wallet_id),
                    "balance": self.ledger.balance(),
                }),
            ),
        };
        let event = EventRecord {
            id: crate::ids::new_id("evt"),
            team_id,
            kind: kind.into(),
            at: self.args.clock.now(),
            data,
        };
        self.spawn_event(event);
    }

    /// Append `event` to the log off the mailbox.
    fn spawn_event(&self, event: EventRecord) {
        let store = self.args.store.clone();
        self.args
            .tasks
            .spawn(async move { persist::team_event(&*store, &event).await });
    }

    /// With several instances on one store, each actor's balance drifts by
    /// the others' spend. Adopt the stored balance plus what is settled here
    /// but not yet written (`pending`, exactly known), whenever no other
    /// write is in the air and nothing was persisted since `stored` was read
    /// (`seq`). Every successful flush does this, so a wallet served by
    /// several instances converges every flush interval.
    pub(super) fn adopt(&mut self, stored: WalletBalance, seq: u64) -> bool {
        let settled =
            !self.inflight && self.retry.is_none() && self.money_inflight == 0 && self.seq == seq;
        if settled {
            self.ledger.rebase(stored.paid, stored.promo, &self.pending);
            self.publish();
        }
        settled
    }

    /// Whether the idle sweep may stop this actor: nothing asked of it for
    /// `idle_after`, and nothing held, unwritten or on its way to the store.
    pub(super) fn is_idle(&self, idle_after: Duration) -> bool {
        // A fresh actor was started for a message that may still be on
        // its way: it is not idle before it handled one.
        self.used
            && self.last_active.elapsed() >= idle_after
            && self.holds.is_empty()
            && self.pending.is_empty()
            && self.retry.is_none()
            && !self.inflight
            && self.money_inflight == 0
            && self.waiters.is_empty()
            // A closing wallet keeps its `closed` flag in memory only.
            && !self.closed
            && self.close_waiters.is_empty()
    }

    pub(super) fn answer_close_waiters(&mut self) {
        if self.closed && self.holds.is_empty() {
            for w in self.close_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    pub(super) fn flush_overdue(&self) -> bool {
        self.failing_since
            .is_some_and(|t| t.elapsed() >= self.args.max_flush_failure)
    }

    pub(super) fn schedule_flush(&mut self, myself: &WalletRef, after: Duration) {
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            myself.send_after(after, || Msg::Flush);
        }
    }

    pub(super) fn start_flush(&mut self, myself: &WalletRef) {
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
                    // One flush at a time per wallet, numbers rising
                    // process-wide: the store keeps a high-water mark (G1).
                    seq: Some(BatchSeq {
                        writer: self.args.nonce,
                        seq: batch_seq,
                    }),
                }
            }
        };
        let store = self.args.store.clone();
        let me = myself.clone();
        self.args.tasks.spawn(async move {
            let stored = persist::flush(&*store, &batch).await;
            let _ = me.cast(Msg::FlushDone { batch, stored });
        });
    }

    pub(super) fn answer_waiters_if_flushed(&mut self) {
        if !self.inflight && self.pending.is_empty() && self.retry.is_none() {
            for w in self.waiters.drain(..) {
                let _ = w.send(Ok(()));
            }
        }
    }
}

/// `stl:{nonce:016x}:{request_id}`, the settlement's ledger id, built
/// without `format!` (it runs on every settlement).
pub(super) fn settlement_id(nonce: u64, request_id: u64) -> String {
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

    #[test]
    fn team_events_keep_their_names() {
        use super::TeamEvent;
        assert_eq!(TeamEvent::Suspended.kind(), "team.suspended");
        assert_eq!(TeamEvent::Resumed.kind(), "team.resumed");
    }
}
