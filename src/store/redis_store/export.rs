//! The ledger's export queue in Redis (G2) and retention (G3): one stream
//! per wallet (`P{w}:export`, written by `apply.lua` in the same step as
//! the balance), read and trimmed here by the exporter; and the pruning of
//! the kept ledger list when there is no ledger database.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::Value;

use super::{decode, RedisStore, CHUNK};
use crate::store::{ExportStore, Exported, LedgerEntry, StoreError, StoreResult};

/// Entries one `prune_ledger.lua` call drops at most (it runs in Redis's
/// one thread: keep each call short).
const PRUNE_STEP: usize = 1_000;

#[async_trait]
impl ExportStore for RedisStore {
    fn export_dirty(&self) -> Vec<String> {
        self.signal.take()
    }

    fn export_wake(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.signal.notify.clone()
    }

    /// Every known wallet whose stream holds entries (XLEN in pipelines
    /// over the `wallets` set: no keyspace scan).
    async fn export_wallets(&self) -> StoreResult<Vec<String>> {
        let wallets = self.smembers(&self.wallets_key()).await?;
        let mut waiting = Vec::new();
        for chunk in wallets.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for w in chunk {
                pipe.cmd("XLEN").arg(self.wk(w, "export"));
            }
            let lens: Vec<u64> = self.p(&pipe).await?;
            waiting.extend(
                chunk
                    .iter()
                    .zip(lens)
                    .filter(|(_, n)| *n > 0)
                    .map(|(w, _)| w.clone()),
            );
        }
        Ok(waiting)
    }

    async fn export_read(&self, wallet_id: &str, max: usize) -> StoreResult<Vec<Exported>> {
        let key = self.wk(wallet_id, "export");
        let rows: Value = self
            .q(redis::cmd("XRANGE")
                .arg(&key)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(max))
            .await?;
        // [[id, [field, value, ...]], ...]
        let Value::Array(rows) = rows else {
            return Err(corrupt(&key, "XRANGE answered no array"));
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (cursor, fields): (String, Vec<String>) =
                redis::from_redis_value(row).map_err(|e| corrupt(&key, &e.to_string()))?;
            let json = match fields.as_slice() {
                [name, json] if name == "e" => json,
                _ => return Err(corrupt(&key, "entry without field `e`")),
            };
            let entry: LedgerEntry = decode(&key, json)?;
            out.push(Exported { cursor, entry });
        }
        Ok(out)
    }

    async fn export_ack(&self, wallet_id: &str, cursors: &[String]) -> StoreResult<()> {
        let mut call = self.scripts.export_ack.prepare_invoke();
        call.key(self.wk(wallet_id, "export"));
        for c in cursors {
            call.arg(c);
        }
        let mut c = self.conn.clone();
        super::timed(call.invoke_async::<i64>(&mut c)).await?;
        Ok(())
    }

    async fn export_backlog(&self, wallet_id: &str) -> StoreResult<u64> {
        self.q(redis::cmd("XLEN").arg(self.wk(wallet_id, "export")))
            .await
    }

    /// apply v1 kept every batch id (a set per wallet), every entry's index
    /// in the ledger list (`entries`), and always the list. Per wallet:
    /// `entries` index values become the JSON of deposits and transfers
    /// (settlement ids go); `batches` goes (v2 remembers batches by
    /// expiring keys, so stop every instance before upgrading: a v1
    /// batch retried across the upgrade would not be recognised); with
    /// export on, the list moves into the export stream a chunk at a time
    /// (a crash between copy and trim copies twice, which PostgreSQL
    /// ignores by entry id).
    async fn upgrade_layout(&self) -> StoreResult<u64> {
        let mut changed = 0;
        for w in self.smembers(&self.wallets_key()).await? {
            changed += self.upgrade_entries(&w).await?;
            let dropped: u64 = self
                .q(redis::cmd("DEL").arg(self.wk(&w, "batches")))
                .await?;
            changed += dropped;
            if self.policy.export {
                changed += self.move_list_to_stream(&w).await?;
            }
        }
        Ok(changed)
    }

    /// G3: batch ids and high-water marks expire by themselves (Redis
    /// TTLs); the ledger lists are trimmed here, wallet by wallet.
    async fn prune_ledger(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        if self.policy.export {
            // No ledger lists: the entries are in PostgreSQL.
            return Ok(0);
        }
        let cutoff = before.format("%Y-%m-%dT%H:%M:%S").to_string();
        let mut dropped = 0u64;
        for w in self.smembers(&self.wallets_key()).await? {
            loop {
                let mut call = self.scripts.prune_ledger.prepare_invoke();
                call.key(self.wk(&w, "ledger")).arg(&cutoff).arg(PRUNE_STEP);
                let mut c = self.conn.clone();
                let n: u64 = super::timed(call.invoke_async(&mut c)).await?;
                dropped += n;
                if n < PRUNE_STEP as u64 {
                    break;
                }
            }
        }
        Ok(dropped)
    }
}

impl RedisStore {
    /// v1 `entries` values (list indexes) to v2 (deposit and transfer
    /// JSON; settlement ids dropped).
    async fn upgrade_entries(&self, w: &str) -> StoreResult<u64> {
        let (entries, list) = (self.wk(w, "entries"), self.wk(w, "ledger"));
        let mut cursor = 0u64;
        let mut changed = 0;
        loop {
            let (next, flat): (u64, Vec<String>) = self
                .q(redis::cmd("HSCAN")
                    .arg(&entries)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(CHUNK))
                .await?;
            let v1: Vec<(&String, &String)> = flat
                .chunks_exact(2)
                .map(|p| (&p[0], &p[1]))
                .filter(|(_, v)| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .collect();
            if !v1.is_empty() {
                let mut pipe = redis::pipe();
                for (_, index) in &v1 {
                    pipe.cmd("LINDEX").arg(&list).arg(*index);
                }
                let rows: Vec<Option<String>> = self.p(&pipe).await?;
                let mut fix = redis::pipe();
                for ((id, _), row) in v1.iter().zip(rows) {
                    let entry = row.map(|r| decode::<LedgerEntry>(&list, &r)).transpose()?;
                    match entry {
                        Some(e) if e.id == **id && e.is_money_movement() => {
                            fix.cmd("HSET")
                                .arg(&entries)
                                .arg(*id)
                                .arg(super::encode(&e)?)
                                .ignore();
                        }
                        _ => {
                            fix.cmd("HDEL").arg(&entries).arg(*id).ignore();
                        }
                    }
                    changed += 1;
                }
                self.p::<()>(&fix).await?;
            }
            if next == 0 {
                return Ok(changed);
            }
            cursor = next;
        }
    }

    /// With export on, a v1 (or G3) ledger list goes to the export stream.
    async fn move_list_to_stream(&self, w: &str) -> StoreResult<u64> {
        let (list, stream) = (self.wk(w, "ledger"), self.wk(w, "export"));
        let mut moved = 0;
        loop {
            let rows: Vec<String> = self
                .q(redis::cmd("LRANGE").arg(&list).arg(0).arg(CHUNK - 1))
                .await?;
            if rows.is_empty() {
                return Ok(moved);
            }
            let mut pipe = redis::pipe();
            for r in &rows {
                pipe.cmd("XADD")
                    .arg(&stream)
                    .arg("*")
                    .arg("e")
                    .arg(r)
                    .ignore();
            }
            pipe.cmd("LTRIM")
                .arg(&list)
                .arg(rows.len())
                .arg(-1)
                .ignore();
            self.p::<()>(&pipe).await?;
            moved += rows.len() as u64;
        }
    }
}

fn corrupt(key: &str, what: &str) -> StoreError {
    StoreError::Corrupt(format!("{key}: {what}"))
}
