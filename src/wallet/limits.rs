//! Spend limits inside the wallet actor (Q1). Every key and member that
//! draws on a wallet draws on it through this one actor, so the actor can
//! decide a limit exactly: a hold is admitted only while, for each spend
//! rule of its `Charge` (the key's, the member's), the period's settled
//! spend plus the outstanding holds plus this hold stay within the limit.
//! Checked and reserved in the same message as the balance hold, so no
//! number of concurrent requests can pass a limit.
//!
//! The book keeps, per key and per member of this wallet, the settled
//! spend of the last `KEEP_DAYS` UTC days, the total, and what is held.
//! It is rebuilt from the store's day buckets when the actor starts
//! (`load`), so period spend survives a restart and includes spend made
//! before a limit was set. `total` counts what the day buckets keep (90
//! days, G1) plus what this actor settled.
//!
//! Holds and settlements only touch entries that exist after a subject's
//! first use; nothing here allocates per request after that (a new UTC day
//! adds one map node per subject).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use hashbrown::HashMap;

use crate::limits::{Charge, SpendRule};
use crate::money::Nanos;
use crate::store::{EventRecord, LedgerEntry, Period, Store, UsageRow};

/// Days of per-day spend kept per subject: a month at most is summed,
/// and a resync replaces at most `CALENDAR_DAYS`.
const KEEP_DAYS: i64 = 40;
/// How far back the day buckets are read at start (their retention).
pub const LOAD_DAYS: i64 = crate::usage::MAX_DAYS as i64;

/// A limit refused a hold: which, and when its period resets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub resets_at: Option<DateTime<Utc>>,
    /// The `quota.reached` event to record, the first time this limit
    /// refused in this period.
    pub event: Option<(&'static str, Arc<str>, SpendRule)>,
}

#[derive(Debug, Default)]
struct Tally {
    days: BTreeMap<NaiveDate, i128>,
    total: i128,
    held: i128,
    /// The period (rule and first day) for which `quota.reached` was sent.
    reported: Option<(Period, Option<NaiveDate>)>,
    /// Other instances' spend per day since this book was loaded: a lower
    /// bound, raised by each resync (`rebase`), never lowered.
    remote: BTreeMap<NaiveDate, i128>,
    remote_total: i128,
}

impl Tally {
    fn spent(&self, period: Period, today: NaiveDate) -> i128 {
        match period.first_day(today) {
            Some(first) => {
                let here: i128 = self.days.range(first..).map(|(_, v)| v).sum();
                let there: i128 = self.remote.range(first..).map(|(_, v)| v).sum();
                here + there
            }
            None => self.total + self.remote_total,
        }
    }

    fn add(&mut self, day: NaiveDate, cost: i128) {
        *self.days.entry(day).or_default() += cost;
        self.total += cost;
        if self.days.len() as i64 > KEEP_DAYS {
            let cutoff = day - Duration::days(KEEP_DAYS);
            self.days.retain(|d, _| *d > cutoff);
            self.remote.retain(|d, _| *d > cutoff);
        }
    }

    /// Whether `amount` more fits `rule` today.
    fn fits(&self, rule: SpendRule, today: NaiveDate, amount: Nanos) -> bool {
        self.spent(rule.period, today) + self.held + i128::from(amount.0)
            <= i128::from(rule.amount.0)
    }
}

struct Reserved {
    key_id: Arc<str>,
    member_id: Arc<str>,
    amount: i128,
}

/// Per key and per member spend of one wallet, and the holds reserved
/// against them.
#[derive(Default)]
pub struct LimitBook {
    keys: HashMap<Arc<str>, Tally>,
    members: HashMap<Arc<str>, Tally>,
    holds: HashMap<u64, Reserved>,
    /// How far back a resync must read: set by the rules charged so far.
    watch: Watch,
    /// A resync read is on its way; `again`: another was asked meanwhile
    /// (reads are coalesced: at most one in the air per wallet).
    reading: bool,
    again: bool,
}

/// Which day buckets other instances' spend must be re-read from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
enum Watch {
    /// No limit charged here yet: nothing to share.
    #[default]
    Nothing,
    /// Day, week or month limits: this week and this month.
    Calendar,
    /// A `total` limit: every retained day.
    Total,
}

impl LimitBook {
    /// The book of `wallet_id` from its stored day buckets (the last
    /// `LOAD_DAYS` days up to `today`).
    pub async fn load(store: &dyn Store, wallet_id: &str, today: NaiveDate) -> LimitBook {
        let mut book = LimitBook::default();
        match store
            .usage_rows(wallet_id, today - Duration::days(LOAD_DAYS))
            .await
        {
            Ok(rows) => book.add_rows(&rows),
            // No worse than a restart without history; logged loudly.
            Err(e) => tracing::warn!(wallet = %wallet_id, error = %e, "spend history not loaded"),
        }
        book
    }

    fn add_rows<'a>(&mut self, rows: impl IntoIterator<Item = &'a UsageRow>) {
        for r in rows {
            let spend = i128::from(r.usage.spend.0);
            tally(&mut self.keys, &r.key_id).add(r.date, spend);
            tally(&mut self.members, &r.member_id).add(r.date, spend);
        }
    }

    /// Q1: whether a hold of `amount` fits every rule of `charge` at `now`.
    /// Changes nothing but the once-per-period event mark on a refusal.
    pub fn check(
        &mut self,
        charge: &Charge,
        amount: Nanos,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        let today = now.date_naive();
        let sides = [
            ("key", &charge.key_id, charge.key_rule, &mut self.keys),
            (
                "member",
                &charge.member_id,
                charge.member_rule,
                &mut self.members,
            ),
        ];
        for (kind, id, rule, map) in sides {
            let Some(rule) = rule else { continue };
            let watch = if rule.period == Period::Total {
                Watch::Total
            } else {
                Watch::Calendar
            };
            self.watch = self.watch.max(watch);
            let t = map.get(&**id);
            if t.is_none_or(|t| t.fits(rule, today, amount)) {
                continue;
            }
            let t = tally(map, id);
            let period = (rule.period, rule.period.first_day(today));
            let first = t.reported != Some(period);
            t.reported = Some(period);
            return Err(Refusal {
                resets_at: rule.period.resets_at(now),
                event: first.then(|| (kind, id.clone(), rule)),
            });
        }
        Ok(())
    }

    /// Reserve `amount` for `request_id` against its key and member (after
    /// `check` and the balance hold both admitted it).
    pub fn reserve(&mut self, request_id: u64, charge: &Charge, amount: Nanos) {
        let amount = i128::from(amount.0);
        tally(&mut self.keys, &charge.key_id).held += amount;
        tally(&mut self.members, &charge.member_id).held += amount;
        self.holds.insert(
            request_id,
            Reserved {
                key_id: charge.key_id.clone(),
                member_id: charge.member_id.clone(),
                amount,
            },
        );
    }

    /// The hold ended unbilled: give its reservation back.
    pub fn release(&mut self, request_id: u64) {
        if let Some(r) = self.holds.remove(&request_id) {
            self.unreserve(&r);
        }
    }

    fn unreserve(&mut self, r: &Reserved) {
        if let Some(t) = self.keys.get_mut(&r.key_id) {
            t.held -= r.amount;
        }
        if let Some(t) = self.members.get_mut(&r.member_id) {
            t.held -= r.amount;
        }
    }

    /// A settlement of `cost` by `key_id` / `member_id` on `day`: counted
    /// whether or not a limit applies (a limit set later includes it).
    pub fn settle(
        &mut self,
        request_id: u64,
        key_id: &str,
        member_id: &str,
        cost: Nanos,
        day: NaiveDate,
    ) {
        if let Some(r) = self.holds.remove(&request_id) {
            self.unreserve(&r);
        }
        let cost = i128::from(cost.0);
        tally(&mut self.keys, key_id).add(day, cost);
        tally(&mut self.members, member_id).add(day, cost);
    }
}

impl LimitBook {
    /// The first day a resync reads, if any limit applies here.
    fn resync_from(&self, today: NaiveDate) -> Option<NaiveDate> {
        match self.watch {
            Watch::Nothing => None,
            Watch::Calendar => Period::Week
                .first_day(today)
                .min(Period::Month.first_day(today)),
            // The days the book keeps: a day older than that is in the
            // spend loaded at start (other instances wrote it before).
            Watch::Total => Some(today - Duration::days(KEEP_DAYS - 1)),
        }
    }

    /// Q1 across instances. `rows` (the store's day buckets from `from`
    /// on) hold the spend loaded at start, what this actor flushed, and
    /// what other instances flushed. This book's `days` hold the first two
    /// plus what is settled here but not yet written (`pending`). So
    /// `rows - days + pending` is at least the other instances' spend (a
    /// flush of ours racing the read only lowers it), and it only grows:
    /// `remote` keeps its maximum, never counting a nano-dollar twice.
    fn rebase(&mut self, rows: &[UsageRow], pending: &[LedgerEntry], from: NaiveDate) {
        let mut stored = LimitBook::default();
        stored.add_rows(rows.iter().filter(|r| r.date >= from));
        let mut unwritten = LimitBook::default();
        for e in pending {
            let Some(f) = &e.usage else { continue };
            let day = e.at.date_naive();
            let cost = -i128::from(e.amount().0);
            tally(&mut unwritten.keys, &f.key_id).add(day, cost);
            tally(&mut unwritten.members, &f.member_id).add(day, cost);
        }
        raise_remote(&mut self.keys, &stored.keys, &unwritten.keys);
        raise_remote(&mut self.members, &stored.members, &unwritten.members);
    }
}

fn raise_remote(
    book: &mut HashMap<Arc<str>, Tally>,
    stored: &HashMap<Arc<str>, Tally>,
    unwritten: &HashMap<Arc<str>, Tally>,
) {
    for (id, s) in stored {
        let u = unwritten.get(id);
        let t = tally(book, id);
        for (day, in_store) in &s.days {
            let here = t.days.get(day).copied().unwrap_or(0);
            let pending = u.and_then(|u| u.days.get(day)).copied().unwrap_or(0);
            let lower = in_store - here + pending;
            let known = t.remote.entry(*day).or_default();
            if lower > *known {
                t.remote_total += lower - *known;
                *known = lower;
            }
        }
    }
}

/// The subject's tally, made on first use (the one allocation per
/// subject): one hash of `id`, with foldhash (hashbrown's default).
fn tally<'a>(map: &'a mut HashMap<Arc<str>, Tally>, id: &str) -> &'a mut Tally {
    map.entry_ref(id).or_default()
}

/// N3: `quota.reached`, recorded in the event log of the wallet's team (a
/// personal wallet's events go under its wallet id, `user:ID`); written
/// off the mailbox.
pub fn quota_event(
    wallet_id: &str,
    team_id: Option<&str>,
    (kind, id, rule): (&'static str, Arc<str>, SpendRule),
    now: DateTime<Utc>,
) -> EventRecord {
    let subject = if kind == "key" { "key_id" } else { "user_id" };
    let mut data = serde_json::json!({
        subject: &*id,
        "spend_limit": rule.amount,
        "period": rule.period,
        "resets_at": rule.period.resets_at(now),
    });
    if let Some(team) = team_id {
        data["team_id"] = team.into();
    }
    EventRecord {
        id: crate::ids::new_id("evt"),
        team_id: team_id.unwrap_or(wallet_id).to_string(),
        kind: "quota.reached".into(),
        at: now,
        data,
    }
}

/// The actor's side of Q1 (called from actor.rs's handlers).
impl super::state::State {
    /// The hold of `handle_hold`: a charged hold must fit its limits, then
    /// the balance (B6); only when both admit it is anything reserved.
    pub(super) fn limited_hold(
        &mut self,
        request_id: u64,
        amount: Nanos,
        charge: Option<&Charge>,
    ) -> Result<(), super::WalletError> {
        let Some(charge) = charge else {
            return self.ledger.hold(amount);
        };
        if charge.key_rule.is_none() && charge.member_rule.is_none() {
            // No limit in force: nothing to reserve (the settlement is still
            // tallied). A limit set while such a request is in flight does
            // not count its hold, only its settlement.
            return self.ledger.hold(amount);
        }
        self.check_limits(charge, amount)?;
        self.ledger.hold(amount)?;
        self.book.reserve(request_id, charge, amount);
        Ok(())
    }

    /// Q1: refuse a hold past a limit (and record `quota.reached` the
    /// first time in the period).
    fn check_limits(&mut self, charge: &Charge, amount: Nanos) -> Result<(), super::WalletError> {
        let now = self.args.clock.now();
        if let Err(refusal) = self.book.check(charge, amount, now) {
            if let Some(reached) = refusal.event {
                let event = quota_event(
                    &self.args.wallet_id,
                    self.args.team_id.as_deref(),
                    reached,
                    now,
                );
                let store = self.args.store.clone();
                self.args
                    .tasks
                    .spawn(async move { super::persist::team_event(&*store, &event).await });
            }
            return Err(super::WalletError::QuotaExceeded {
                resets_at: refusal.resets_at,
            });
        }
        Ok(())
    }

    /// Another instance (or this one) wrote to this wallet: while a limit
    /// applies here, re-read the day buckets the limits count, off the
    /// mailbox.
    pub(super) fn handle_resync_limits(&mut self, myself: &super::actor::WalletRef) {
        let Some(from) = self.book.resync_from(self.args.clock.now().date_naive()) else {
            return;
        };
        if self.book.reading {
            self.book.again = true;
            return;
        }
        self.book.reading = true;
        let store = self.args.store.clone();
        let id = self.args.wallet_id.clone();
        let me = myself.clone();
        self.args.tasks.spawn(async move {
            let rows = match store.usage_rows(&id, from).await {
                Ok(rows) => Some(rows),
                Err(e) => {
                    tracing::debug!(wallet = %id, error = %e, "spend resync failed");
                    None
                }
            };
            let _ = me.cast(super::actor::Msg::LimitsRead { rows, from });
        });
    }

    /// Adopt the rows read by `handle_resync_limits` (`rebase`); a failed
    /// read is tried again after a flush interval.
    pub(super) fn handle_limits_read(
        &mut self,
        myself: &super::actor::WalletRef,
        rows: Option<&[UsageRow]>,
        from: NaiveDate,
    ) {
        self.book.reading = false;
        match rows {
            // No need to wait for a quiet moment: `rebase` is exact as a
            // lower bound whatever was written meanwhile. Writes heard of
            // during the read are read after a flush interval.
            Some(rows) => {
                self.book.rebase(rows, &self.pending, from);
                // At most one read per flush interval per wallet.
                if std::mem::take(&mut self.book.again) {
                    let interval = self.args.flush_interval;
                    myself.send_after(interval, || super::actor::Msg::ResyncLimits);
                }
            }
            None => {
                self.book.again = false;
                let interval = self.args.flush_interval;
                myself.send_after(interval, || super::actor::Msg::ResyncLimits);
            }
        }
    }

    /// A settlement's spend, in the book on the day the ledger dates it.
    pub(super) fn settle_limits(
        &mut self,
        request_id: u64,
        cost: Nanos,
        facts: &crate::store::UsageFacts,
    ) {
        let day = self.args.clock.now().date_naive();
        self.book
            .settle(request_id, &facts.key_id, &facts.member_id, cost, day);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn charge(rule: Option<SpendRule>) -> Charge {
        Charge {
            key_id: Arc::from("k"),
            member_id: Arc::from("m"),
            key_rule: rule,
            member_rule: None,
        }
    }

    #[test]
    fn holds_and_spend_count_against_the_limit() {
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 0).unwrap();
        let rule = SpendRule {
            amount: Nanos(100),
            period: Period::Day,
        };
        let c = charge(Some(rule));
        let mut b = LimitBook::default();
        assert!(b.check(&c, Nanos(60), now).is_ok());
        b.reserve(1, &c, Nanos(60));
        let refused = b.check(&c, Nanos(41), now).unwrap_err();
        assert!(refused.event.is_some());
        assert_eq!(
            refused.resets_at,
            Some(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap())
        );
        // Once per period.
        assert!(b.check(&c, Nanos(41), now).unwrap_err().event.is_none());
        assert!(b.check(&c, Nanos(40), now).is_ok());
        b.settle(1, "k", "m", Nanos(50), now.date_naive());
        assert!(b.check(&c, Nanos(50), now).is_ok());
        assert!(b.check(&c, Nanos(51), now).is_err());
        // The next day starts afresh; `total` does not.
        let tomorrow = now + Duration::days(1);
        assert!(b.check(&c, Nanos(100), tomorrow).is_ok());
        let total = charge(Some(SpendRule {
            amount: Nanos(100),
            period: Period::Total,
        }));
        assert!(b.check(&total, Nanos(51), tomorrow).is_err());
        b.release(99);
        assert!(b.check(&charge(None), Nanos(1_000), now).is_ok());
    }

    #[test]
    fn a_rebase_adopts_other_instances_spend_and_keeps_what_is_unwritten() {
        use crate::store::{DayUsage, EntryKind, UsageFacts};
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 0).unwrap();
        let today = now.date_naive();
        let rule = SpendRule {
            amount: Nanos(100),
            period: Period::Month,
        };
        let c = charge(Some(rule));
        let mut b = LimitBook::default();
        b.check(&c, Nanos(1), now).unwrap();
        // Settled here, 30 of it written (a row), 10 not yet (pending).
        b.settle(1, "k", "m", Nanos(30), today);
        b.settle(2, "k", "m", Nanos(10), today);
        let row = |spend| UsageRow {
            wallet_id: "w".into(),
            key_id: "k".into(),
            member_id: "m".into(),
            date: today,
            usage: DayUsage {
                spend: Nanos(spend),
                ..DayUsage::default()
            },
        };
        let pending = LedgerEntry {
            id: "stl:1".into(),
            wallet_id: "w".into(),
            kind: EntryKind::Settlement,
            paid: Nanos(-10),
            promo: Nanos::ZERO,
            at: now,
            reference: "r".into(),
            usage: Some(UsageFacts {
                key_id: "k".into(),
                member_id: "m".into(),
                team_id: None,
                model: "m".into(),
                usage: Default::default(),
                status: Default::default(),
            }),
        };
        // Another instance spent 50 more: the store says 80 for today.
        let from = b.resync_from(today).unwrap();
        b.rebase(&[row(80)], std::slice::from_ref(&pending), from);
        assert!(
            b.check(&c, Nanos(10), now).is_ok(),
            "80 + 10 written or not"
        );
        assert!(b.check(&c, Nanos(11), now).is_err());
        // A read that raced our own flush (it missed our 30) lowers nothing;
        // a second read of the same rows counts nothing twice.
        b.rebase(&[row(50)], std::slice::from_ref(&pending), from);
        b.rebase(&[row(80)], std::slice::from_ref(&pending), from);
        assert!(b.check(&c, Nanos(10), now).is_ok());
        assert!(b.check(&c, Nanos(11), now).is_err());
    }
}
