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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::limits::{Charge, SpendRule};
use crate::money::Nanos;
use crate::store::{EventRecord, Period, Store, UsageRow};

/// Days of per-day spend kept per subject: a month at most is summed.
const KEEP_DAYS: i64 = 32;
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
}

impl Tally {
    fn spent(&self, period: Period, today: NaiveDate) -> i128 {
        match period.first_day(today) {
            Some(first) => self.days.range(first..).map(|(_, v)| v).sum(),
            None => self.total,
        }
    }

    fn add(&mut self, day: NaiveDate, cost: i128) {
        *self.days.entry(day).or_default() += cost;
        self.total += cost;
        if self.days.len() as i64 > KEEP_DAYS {
            let cutoff = day - Duration::days(KEEP_DAYS);
            self.days.retain(|d, _| *d > cutoff);
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

    fn add_rows(&mut self, rows: &[UsageRow]) {
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

/// The subject's tally, made on first use (the one allocation per subject).
fn tally<'a>(map: &'a mut HashMap<Arc<str>, Tally>, id: &str) -> &'a mut Tally {
    if !map.contains_key(id) {
        map.insert(Arc::from(id), Tally::default());
    }
    map.get_mut(id).expect("inserted above")
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
        self.ledger.hold(amount)?;
        self.book.reserve(request_id, charge, amount);
        Ok(())
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
}
