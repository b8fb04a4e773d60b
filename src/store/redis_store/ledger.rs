//! Wallets and the ledger in Redis: balances, the ledger list and its
//! index, and `apply`, one Lua script (`apply.lua`) that checks a whole
//! batch before its first write. The money sums are made here in checked
//! i64, never in Lua (see the notes in `mod.rs`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{Datelike, NaiveDate};
use redis::ScriptInvocation;

use super::{decode, encode, timed, RedisStore, CHUNK};
use crate::money::Nanos;
use crate::store::{
    Applied, DayUsage, EntryKind, LedgerEntry, LedgerStore, MoneyTotals, StoreError, StoreResult,
    WalletBalance, WalletBatch,
};

/// The days of one batch's usage: day -> (key, member) -> counters.
type Days<'b> = BTreeMap<NaiveDate, BTreeMap<(&'b str, &'b str), DayUsage>>;

/// What one batch changes, summed in checked i64 before any call is built.
struct Sums<'b> {
    paid: i64,
    promo: i64,
    deposits: i64,
    usage: i64,
    days: Days<'b>,
    /// Key id -> the latest settlement time, in nanos since the epoch.
    used: BTreeMap<&'b str, i64>,
}

fn overflow(batch: &WalletBatch) -> StoreError {
    StoreError::OutOfRange(format!("batch {} overflows i64", batch.batch_id))
}

/// The unit `apply.lua` carries the `deposits` and `usage` counters in
/// (4e18 nanos): a batch may move either by at most this, and by no less
/// than zero, so the carried field never overflows (see apply.lua).
const CARRY: i64 = 4_000_000_000_000_000_000;

/// Sum a batch's deltas, reconciliation counters, usage and last-used
/// times; any sum past i64 refuses the whole batch.
fn sums(batch: &WalletBatch) -> StoreResult<Sums<'_>> {
    let overflow = || overflow(batch);
    let add = |a: i64, b: i64| a.checked_add(b).ok_or_else(overflow);
    let (mut paid, mut promo, mut deposits, mut usage) = (0i64, 0i64, 0i64, 0i64);
    let mut days: Days<'_> = BTreeMap::new();
    let mut used: BTreeMap<&str, i64> = BTreeMap::new();
    for e in &batch.entries {
        let amount = add(e.paid.0, e.promo.0)?;
        paid = add(paid, e.paid.0)?;
        promo = add(promo, e.promo.0)?;
        match e.kind {
            EntryKind::Deposit => deposits = add(deposits, amount)?,
            EntryKind::Settlement => {
                usage = add(usage, amount.checked_neg().ok_or_else(overflow)?)?
            }
            EntryKind::TransferIn | EntryKind::TransferOut => {}
        }
        if let Some(u) = &e.usage {
            let spend = Nanos(amount.checked_neg().ok_or_else(overflow)?);
            days.entry(e.at.date_naive())
                .or_default()
                .entry((u.key_id.as_str(), u.member_id.as_str()))
                .or_default()
                .add(&u.usage, spend);
            // Times before 1970 or after 2262 have no i64 nanos; such a
            // settlement counts but does not move `last_used_at`.
            if let Some(t) = e.at.timestamp_nanos_opt().filter(|t| *t >= 0) {
                let last = used.entry(u.key_id.as_str()).or_insert(t);
                *last = (*last).max(t);
            }
        }
    }
    if !(0..=CARRY).contains(&deposits) || !(0..=CARRY).contains(&usage) {
        return Err(overflow());
    }
    Ok(Sums {
        paid,
        promo,
        deposits,
        usage,
        days,
        used,
    })
}

impl RedisStore {
    /// Build the `apply.lua` call; all arithmetic on money happens here (in
    /// checked i64) or in Redis integers, never in Lua.
    fn apply_call<'a>(&'a self, batch: &WalletBatch) -> StoreResult<ScriptInvocation<'a>> {
        let w = &batch.wallet_id;
        let Sums {
            paid,
            promo,
            deposits,
            usage,
            days,
            used,
        } = sums(batch)?;

        let mut call = self.scripts.apply.prepare_invoke();
        // G1: what the store remembers of this batch, expiring.
        let memory = match batch.seq {
            Some(s) => format!("hw:{:016x}", s.writer),
            None => format!("batch:{}", batch.batch_id),
        };
        for part in [
            "bal",
            "ledger",
            "entries",
            &memory,
            "usage_days",
            "keyused",
            "export",
        ] {
            call.key(self.wk(w, part));
        }
        let policy = &self.policy;
        call.arg(&batch.batch_id)
            .arg(w)
            .arg(paid)
            .arg(promo)
            .arg(deposits)
            .arg(usage)
            .arg(batch.seq.map(|s| s.seq.to_string()).unwrap_or_default())
            .arg(policy.batch_id_ttl.as_secs().max(1))
            .arg(if policy.export { "1" } else { "0" })
            .arg(policy.backlog_max)
            .arg(batch.entries.len());
        for e in &batch.entries {
            let kept = if e.is_money_movement() { "m" } else { "s" };
            call.arg(&e.id).arg(&e.wallet_id).arg(kept).arg(encode(e)?);
        }
        self.day_args(&mut call, batch, &days)?;
        call.arg(used.len());
        for (key_id, t) in used {
            call.arg(key_id).arg(format!("{t:020}"));
        }
        Ok(call)
    }

    /// The usage days of `apply_call`: per day its key, name, day number
    /// and counter fields.
    fn day_args(
        &self,
        call: &mut ScriptInvocation<'_>,
        batch: &WalletBatch,
        days: &Days<'_>,
    ) -> StoreResult<()> {
        let w = &batch.wallet_id;
        call.arg(days.len());
        for (date, rows) in days {
            call.key(self.day_key(w, *date));
            call.arg(date.to_string())
                .arg(date.num_days_from_ce())
                .arg(rows.len() * 5);
            for ((key_id, member_id), u) in rows {
                let counters = [
                    ("calls", u.calls),
                    ("input_tokens", u.input_tokens),
                    ("cached_tokens", u.cached_tokens),
                    ("output_tokens", u.output_tokens),
                ];
                for (name, n) in counters {
                    let n = i64::try_from(n).map_err(|_| overflow(batch))?;
                    call.arg(usage_field(key_id, member_id, name)?).arg(n);
                }
                call.arg(usage_field(key_id, member_id, "spend")?)
                    .arg(u.spend.0);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl LedgerStore for RedisStore {
    async fn wallet(&self, wallet_id: &str) -> StoreResult<WalletBalance> {
        let (paid, promo): (Option<String>, Option<String>) = self
            .q(redis::cmd("HMGET")
                .arg(self.wk(wallet_id, "bal"))
                .arg("paid")
                .arg("promo"))
            .await?;
        Ok(WalletBalance {
            paid: nanos(paid.as_deref())?,
            promo: nanos(promo.as_deref())?,
        })
    }

    async fn apply(&self, batch: &WalletBatch) -> StoreResult<(Applied, WalletBalance)> {
        let call = self.apply_call(batch)?;
        // Listed before the batch lands, so `money_totals` never misses a
        // wallet that holds money (see the module notes).
        self.q::<()>(
            redis::cmd("SADD")
                .arg(self.wallets_key())
                .arg(&batch.wallet_id),
        )
        .await?;
        let mut c = self.conn.clone();
        let reply: Vec<String> = timed(call.invoke_async(&mut c)).await?;
        let field = |i: usize| reply.get(i).map(String::as_str);
        let balance = || -> StoreResult<WalletBalance> {
            Ok(WalletBalance {
                paid: nanos(field(1))?,
                promo: nanos(field(2))?,
            })
        };
        let applied = match field(0) {
            Some("now") => Some(Applied::Now),
            Some("before") => Some(Applied::Before),
            _ => None,
        };
        if let Some(applied) = applied {
            // A retry answered `before` may be the first word of a batch
            // whose first answer was lost: its entries wait too.
            if self.policy.export {
                self.signal.mark(&batch.wallet_id);
            }
            return Ok((applied, balance()?));
        }
        match field(0) {
            Some("backlog") => Err(StoreError::Unavailable(
                field(1).unwrap_or("ledger export backlog full").to_string(),
            )),
            Some("range") => Err(StoreError::OutOfRange(
                field(1).unwrap_or("batch out of range").to_string(),
            )),
            Some("corrupt") => Err(StoreError::Corrupt(
                field(1).unwrap_or("batch refused").to_string(),
            )),
            other => Err(StoreError::Corrupt(format!(
                "apply script answered {other:?}"
            ))),
        }
    }

    /// The entries still held here: the retained list (G3), or, when
    /// exporting, the wallet's deposits and transfers.
    async fn ledger(&self, wallet_id: &str) -> StoreResult<Vec<LedgerEntry>> {
        if self.policy.export {
            let key = self.wk(wallet_id, "entries");
            let rows: Vec<String> = self.q(redis::cmd("HVALS").arg(&key)).await?;
            let mut v = rows
                .iter()
                .map(|s| decode::<LedgerEntry>(&key, s))
                .collect::<StoreResult<Vec<_>>>()?;
            v.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
            return Ok(v);
        }
        let key = self.wk(wallet_id, "ledger");
        let rows: Vec<String> = self
            .q(redis::cmd("LRANGE").arg(&key).arg(0).arg(-1))
            .await?;
        rows.iter().map(|s| decode(&key, s)).collect()
    }

    /// B8, B10: per-wallet balances and counters summed in i128, never
    /// clipped; each counter is `X_hi * 4e18 + X` (apply.lua).
    async fn money_totals(&self) -> StoreResult<MoneyTotals> {
        let wallets = self.smembers(&self.wallets_key()).await?;
        let mut t = MoneyTotals::default();
        let fields = [
            "paid",
            "promo",
            "deposits",
            "deposits_hi",
            "usage",
            "usage_hi",
        ];
        for chunk in wallets.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for w in chunk {
                pipe.cmd("HMGET").arg(self.wk(w, "bal")).arg(&fields[..]);
            }
            let rows: Vec<Vec<Option<String>>> = self.p(&pipe).await?;
            for row in rows {
                let mut v = [0i128; 6];
                for (slot, s) in v.iter_mut().zip(&row) {
                    *slot = nanos(s.as_deref())?.0.into();
                }
                let carry = i128::from(CARRY);
                t.balances.0 += v[0] + v[1];
                t.deposits.0 += v[3] * carry + v[2];
                t.usage.0 += v[5] * carry + v[4];
            }
        }
        Ok(t)
    }

    /// Deposits and transfers are kept by id, as JSON (settlements are not).
    async fn ledger_entry(
        &self,
        wallet_id: &str,
        entry_id: &str,
    ) -> StoreResult<Option<LedgerEntry>> {
        let key = self.wk(wallet_id, "entries");
        let row: Option<String> = self.q(redis::cmd("HGET").arg(&key).arg(entry_id)).await?;
        match row {
            None => Ok(None),
            Some(s) => decode(&key, &s).map(Some),
        }
    }
}

/// An integer nano-dollar field; absent is zero.
fn nanos(v: Option<&str>) -> StoreResult<Nanos> {
    match v {
        None => Ok(Nanos::ZERO),
        Some(s) => s
            .parse::<i64>()
            .map(Nanos)
            .map_err(|_| StoreError::Corrupt(format!("amount {s:?} is not integer nanos"))),
    }
}

/// The field of one counter in a day's usage hash: a JSON array, so ids
/// with any characters stay unambiguous.
fn usage_field(key_id: &str, member_id: &str, counter: &str) -> StoreResult<String> {
    encode(&(key_id, member_id, counter))
}
