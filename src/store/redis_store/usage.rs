//! Usage day buckets in Redis: one hash per wallet and UTC day, indexed by
//! the wallet's `usage_days` sorted set; written by `apply` (`ledger.rs`),
//! read and pruned here.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{Datelike, NaiveDate};

use super::{decode, RedisStore, CHUNK};
use crate::money::Nanos;
use crate::store::{DayUsage, StoreError, StoreResult, UsageRow, UsageStore};

#[async_trait]
impl UsageStore for RedisStore {
    async fn usage_rows(&self, wallet_id: &str, from: NaiveDate) -> StoreResult<Vec<UsageRow>> {
        let dates: Vec<String> = self
            .q(redis::cmd("ZRANGEBYSCORE")
                .arg(self.wk(wallet_id, "usage_days"))
                .arg(from.num_days_from_ce())
                .arg("+inf"))
            .await?;
        let mut rows: BTreeMap<(NaiveDate, String, String), DayUsage> = BTreeMap::new();
        for chunk in dates.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            let mut parsed = Vec::with_capacity(chunk.len());
            for d in chunk {
                let date: NaiveDate = d
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("usage day {d:?}: {e}")))?;
                pipe.cmd("HGETALL").arg(self.day_key(wallet_id, date));
                parsed.push(date);
            }
            let hashes: Vec<HashMap<String, i64>> = self.p(&pipe).await?;
            for (date, fields) in parsed.into_iter().zip(hashes) {
                for (field, n) in fields {
                    let (key_id, member_id, counter): (String, String, String) =
                        decode("usage field", &field)?;
                    let u = rows.entry((date, key_id, member_id)).or_default();
                    let count = || {
                        u64::try_from(n).map_err(|_| {
                            StoreError::Corrupt(format!("usage counter {field} = {n}"))
                        })
                    };
                    match counter.as_str() {
                        "calls" => u.calls = count()?,
                        "input_tokens" => u.input_tokens = count()?,
                        "cached_tokens" => u.cached_tokens = count()?,
                        "output_tokens" => u.output_tokens = count()?,
                        "spend" => u.spend = Nanos(n),
                        _ => {
                            return Err(StoreError::Corrupt(format!(
                                "unknown usage counter {counter:?}"
                            )))
                        }
                    }
                }
            }
        }
        Ok(rows
            .into_iter()
            .map(|((date, key_id, member_id), usage)| UsageRow {
                wallet_id: wallet_id.to_string(),
                key_id,
                member_id,
                date,
                usage,
            })
            .collect())
    }

    async fn prune_usage(&self, before: NaiveDate) -> StoreResult<()> {
        let cutoff = format!("({}", before.num_days_from_ce());
        for w in self.smembers(&self.wallets_key()).await? {
            let days_key = self.wk(&w, "usage_days");
            let old: Vec<String> = self
                .q(redis::cmd("ZRANGEBYSCORE")
                    .arg(&days_key)
                    .arg("-inf")
                    .arg(&cutoff))
                .await?;
            if old.is_empty() {
                continue;
            }
            // One slot, one transaction: the index and the buckets go together.
            let mut pipe = redis::pipe();
            pipe.atomic();
            for d in &old {
                let date: NaiveDate = d
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("usage day {d:?}: {e}")))?;
                pipe.cmd("DEL").arg(self.day_key(&w, date)).ignore();
            }
            pipe.cmd("ZREM").arg(&days_key).arg(&old).ignore();
            self.p::<()>(&pipe).await?;
        }
        Ok(())
    }
}
