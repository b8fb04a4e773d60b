//! The Redis store (production): every record and every nano-dollar in
//! Redis, behind the same `Store` contract as the memory store
//! (`tests/store_contract.rs` runs one suite against both). Nothing it
//! acknowledges is lost as long as Redis runs with AOF (`appendonly yes`,
//! ideally `appendfsync always`); `connect` warns when it does not.
//!
//! # Key layout
//! Every key starts with the configurable prefix `P` (e.g. `tollgate:`).
//! A wallet's keys share the Redis Cluster hash tag `{wallet_id}`, so one
//! script can change all of them atomically on a cluster too:
//! - `P{w}:bal`        hash: `paid`, `promo`, `deposits`, `usage` (integer nanos)
//! - `P{w}:ledger`     list of `LedgerEntry` JSON, in apply order
//! - `P{w}:entries`    hash: entry id -> index in the ledger list
//! - `P{w}:batches`    set of applied batch ids (kept forever: correctness
//!   over memory)
//! - `P{w}:usage_days` sorted set: `YYYY-MM-DD` scored by day number
//! - `P{w}:usage:D`    hash per day D: `["key","member","counter"]` -> integer
//! - `P{w}:keyused`    hash: key id -> last settlement time (see below)
//!
//! Everything else is keyed by its own id, one record per key, indexes
//! beside it (`user:ID`, `user_email:EMAIL`, `session:HASH`, `key:ID` (a
//! hash of `json` + `status`), `key_hash:HASH`, `user_keys:USER`,
//! `team_keys:TEAM`, `team:ID`, `owned_teams:USER`, `members:TEAM` (hash
//! user -> JSON), `memberships:USER`, `invite:ID`, `invite_token:HASH`,
//! `team_invites:TEAM`, `events:TEAM`, `transfers`, `idem:SCOPE`,
//! `wallets`), and the outbox under its own tag (`{outbox}:messages`,
//! `{outbox}:order`). Pub/sub uses the channel `Pchanges`.
//!
//! # Money, atomicity, idempotency
//! `apply` is one Lua script (`redis/apply.lua`): it checks everything
//! (batch id seen -> `Before` with the stored balance; every entry is for
//! this wallet; no entry id applied before; no money field near i64
//! overflow) before its first write, because Redis scripts do not roll
//! back. Amounts cross as integer strings into `HINCRBY`; Lua never does
//! arithmetic on money (its numbers are doubles). The batch id joins the
//! wallet's `batches` set in the same script, so a batch whose answer was
//! lost (a timeout, a dropped connection) and is sent again applies once.
//!
//! # Cluster caveats (why totals are per wallet)
//! The reconciliation totals could have been three global counters, but a
//! global key lives in another hash slot and a script may not span slots.
//! So each wallet keeps its own `deposits` / `usage` beside its balance,
//! and `money_totals` sums over the `wallets` set. A wallet joins that set
//! (idempotent `SADD`) *before* its first batch, so a crash between the two
//! leaves at worst an empty wallet in the set, never money outside it.
//! Likewise the key record cannot be written by `apply` (other slot): the
//! last settlement time per key lives in the wallet's `keyused` hash and is
//! merged into `KeyRecord::last_used_at` on read (the later of the two).
//! Multi-key writes outside a wallet are ordered so that a crash between
//! them leaves only unreachable leftovers (a claimed key hash with no
//! record, an index entry whose record is filtered out on read), never a
//! record that breaks a uniqueness rule. This client speaks to one Redis
//! (`ConnectionManager`); a cluster client can replace it without changing
//! the layout.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, Cmd, FromRedisValue, Pipeline, RedisError, RedisResult, Script, Value};
use async_trait::async_trait;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use super::{
    Applied, Change, EntryKind, EventRecord, IdempotencyRecord, InviteRecord, KeyRecord, KeyScope,
    KeyStatus, LedgerEntry, MemberRecord, MoneyTotals, OutboxMessage, SessionRecord, Store,
    StoreError, StoreResult, TeamRecord, TransferRecord, UsageRow, UserRecord, WalletBalance,
    WalletBatch,
};
use crate::money::Nanos;
use crate::store::DayUsage;

/// How long one round trip may take before the caller hears `Unavailable`.
/// Bounded so a dead Redis makes requests fail fast (503) instead of hang;
/// a write that did land after the deadline is made harmless by batch ids.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// One connection attempt (the manager's, and the pub/sub task's).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The subscriber's reconnect backoff, doubling between these bounds.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the subscriber checks that its connection is alive: a
/// half-open TCP connection would otherwise never end the message stream.
const SUBSCRIBER_PING: Duration = Duration::from_secs(5);
/// Wallets or ids per pipeline when reading many records.
const CHUNK: usize = 500;

/// Scripts are versioned in their first line; Redis caches them by SHA-1,
/// and `Script` reloads them after a restart emptied that cache (NOSCRIPT).
struct Scripts {
    apply: Script,
    set_key_status: Script,
    put_outbox: Script,
}

pub struct RedisStore {
    /// Cloned per call (an `Arc` inside): one multiplexed connection that
    /// reconnects by itself after Redis comes back.
    conn: ConnectionManager,
    /// For the dedicated pub/sub connections `subscribe` opens.
    client: Client,
    prefix: String,
    scripts: Scripts,
}

impl RedisStore {
    /// Connect to `url` and keep every key under `prefix`. Fails with
    /// `Unavailable` when Redis cannot be reached within a few seconds.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisStore, StoreError> {
        // The URL may carry a password: never echo it.
        let client = Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid redis url ({:?})", e.kind())))?;
        // Few quick retries inside the manager: our own deadline (OP_TIMEOUT)
        // answers the caller, and the next call starts a fresh reconnect.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = timed(ConnectionManager::new_with_config(client.clone(), config)).await?;
        let store = RedisStore {
            conn,
            client,
            prefix: prefix.to_string(),
            scripts: Scripts {
                apply: Script::new(include_str!("redis/apply.lua")),
                set_key_status: Script::new(include_str!("redis/set_key_status.lua")),
                put_outbox: Script::new(include_str!("redis/put_outbox.lua")),
            },
        };
        store.ping().await?;
        store.warn_without_aof().await;
        Ok(store)
    }

    /// Durability is Redis's job; say so when it is not configured for it.
    async fn warn_without_aof(&self) {
        let mut info = ::redis::cmd("INFO");
        info.arg("persistence");
        match self.q::<String>(&info).await {
            Ok(text) if text.lines().any(|l| l.trim() == "aof_enabled:1") => {}
            Ok(_) => tracing::warn!(
                "Redis runs without AOF (appendonly no): acknowledged writes can be lost if it crashes"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot read Redis persistence settings"),
        }
    }

    // --- Key names -------------------------------------------------------

    /// A key of wallet `w`, in the wallet's hash slot.
    fn wk(&self, w: &str, part: &str) -> String {
        format!("{}{{{w}}}:{part}", self.prefix)
    }

    fn day_key(&self, w: &str, date: NaiveDate) -> String {
        self.wk(w, &format!("usage:{date}"))
    }

    /// A key outside any wallet.
    fn k(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    fn wallets_key(&self) -> String {
        format!("{}wallets", self.prefix)
    }

    fn transfers_key(&self) -> String {
        format!("{}transfers", self.prefix)
    }

    fn outbox_keys(&self) -> (String, String) {
        (
            format!("{}{{outbox}}:messages", self.prefix),
            format!("{}{{outbox}}:order", self.prefix),
        )
    }

    fn channel(&self) -> String {
        format!("{}changes", self.prefix)
    }

    // --- Round trips, each bounded by OP_TIMEOUT --------------------------

    async fn q<T: FromRedisValue>(&self, cmd: &Cmd) -> StoreResult<T> {
        let mut c = self.conn.clone();
        timed(cmd.query_async(&mut c)).await
    }

    async fn p<T: FromRedisValue>(&self, pipe: &Pipeline) -> StoreResult<T> {
        let mut c = self.conn.clone();
        timed(pipe.query_async(&mut c)).await
    }

    async fn get_json<T: DeserializeOwned>(&self, key: &str) -> StoreResult<Option<T>> {
        let v: Option<String> = self.q(::redis::cmd("GET").arg(key)).await?;
        v.map(|s| decode(key, &s)).transpose()
    }

    async fn set_json<T: Serialize>(&self, key: &str, v: &T) -> StoreResult<()> {
        let body = encode(v)?;
        self.q::<()>(::redis::cmd("SET").arg(key).arg(body)).await
    }

    async fn smembers(&self, key: &str) -> StoreResult<Vec<String>> {
        self.q(::redis::cmd("SMEMBERS").arg(key)).await
    }

    /// `GET` many JSON records by key, skipping missing ones.
    async fn mget_json<T: DeserializeOwned>(&self, keys: &[String]) -> StoreResult<Vec<T>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(CHUNK) {
            let vals: Vec<Option<String>> = self.q(::redis::cmd("MGET").arg(chunk)).await?;
            for (key, v) in chunk.iter().zip(vals) {
                if let Some(s) = v {
                    out.push(decode(key, &s)?);
                }
            }
        }
        Ok(out)
    }

    // --- Keys: the record hash plus the last-used time from the wallet ----

    /// Load key records by id, with `status` and `last_used_at` merged in.
    async fn keys_by_ids(&self, ids: &[String]) -> StoreResult<Vec<KeyRecord>> {
        let mut keys = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let mut pipe = ::redis::pipe();
            for id in chunk {
                pipe.cmd("HMGET")
                    .arg(self.k("key", id))
                    .arg("json")
                    .arg("status");
            }
            let rows: Vec<(Option<String>, Option<String>)> = self.p(&pipe).await?;
            for (id, (json, status)) in chunk.iter().zip(rows) {
                let Some(json) = json else { continue };
                let mut key: KeyRecord = decode(&self.k("key", id), &json)?;
                if let Some(s) = status {
                    key.status = decode(&self.k("key", id), &format!("\"{s}\""))?;
                }
                keys.push(key);
            }
        }
        for chunk in keys.chunks_mut(CHUNK) {
            let mut pipe = ::redis::pipe();
            for key in chunk.iter() {
                pipe.cmd("HGET")
                    .arg(self.wk(&key.wallet_id, "keyused"))
                    .arg(&key.id);
            }
            let used: Vec<Option<String>> = self.p(&pipe).await?;
            for (key, used) in chunk.iter_mut().zip(used) {
                if let Some(t) = used.as_deref().and_then(parse_time) {
                    key.last_used_at = key.last_used_at.max(Some(t));
                }
            }
        }
        Ok(keys)
    }

    /// Build the `apply.lua` call; all arithmetic on money happens here (in
    /// checked i64) or in Redis integers, never in Lua.
    fn apply_call<'a>(&'a self, batch: &WalletBatch) -> StoreResult<::redis::ScriptInvocation<'a>> {
        let w = &batch.wallet_id;
        let overflow = || StoreError::Corrupt(format!("batch {} overflows i64", batch.batch_id));
        let add = |a: i64, b: i64| a.checked_add(b).ok_or_else(overflow);
        let (mut paid, mut promo, mut deposits, mut usage) = (0i64, 0i64, 0i64, 0i64);
        let mut days: BTreeMap<NaiveDate, BTreeMap<(&str, &str), DayUsage>> = BTreeMap::new();
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

        let mut call = self.scripts.apply.prepare_invoke();
        for part in [
            "bal",
            "ledger",
            "entries",
            "batches",
            "usage_days",
            "keyused",
        ] {
            call.key(self.wk(w, part));
        }
        call.arg(&batch.batch_id)
            .arg(w)
            .arg(paid)
            .arg(promo)
            .arg(deposits)
            .arg(usage)
            .arg(batch.entries.len());
        for e in &batch.entries {
            call.arg(&e.id).arg(&e.wallet_id).arg(encode(e)?);
        }
        call.arg(days.len());
        for (date, rows) in &days {
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
                    let n = i64::try_from(n).map_err(|_| overflow())?;
                    call.arg(usage_field(key_id, member_id, name)?).arg(n);
                }
                call.arg(usage_field(key_id, member_id, "spend")?)
                    .arg(u.spend.0);
            }
        }
        call.arg(used.len());
        for (key_id, t) in used {
            call.arg(key_id).arg(format!("{t:020}"));
        }
        Ok(call)
    }
}

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> StoreResult<()> {
        let pong: String = self.q(&::redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!("PING answered {pong:?}")))
        }
    }

    // --- Users and sessions ----------------------------------------------

    async fn create_user(&self, user: &UserRecord) -> StoreResult<()> {
        // The record first, then the email claim: a crash between leaves an
        // unreachable record under a fresh id, never an email that nobody
        // can sign up with again.
        let user_key = self.k("user", &user.id);
        self.set_json(&user_key, user).await?;
        let claimed: Option<String> = self
            .q(::redis::cmd("SET")
                .arg(self.k("user_email", &user.email_norm))
                .arg(&user.id)
                .arg("NX")
                .arg("GET"))
            .await?;
        match claimed {
            None => Ok(()),
            Some(owner) => {
                if owner != user.id {
                    self.q::<()>(::redis::cmd("DEL").arg(&user_key)).await?;
                }
                Err(StoreError::Conflict("email"))
            }
        }
    }

    async fn user_by_email(&self, email_norm: &str) -> StoreResult<Option<UserRecord>> {
        let id: Option<String> = self
            .q(::redis::cmd("GET").arg(self.k("user_email", email_norm)))
            .await?;
        match id {
            Some(id) => self.user(&id).await,
            None => Ok(None),
        }
    }

    async fn user(&self, id: &str) -> StoreResult<Option<UserRecord>> {
        self.get_json(&self.k("user", id)).await
    }

    async fn put_session(&self, s: &SessionRecord) -> StoreResult<()> {
        // Redis forgets the session when it expires (PXAT, rounded up to the
        // next millisecond); an instant in the past deletes it at once.
        let ms = s.expires_at.timestamp_millis()
            + i64::from(
                !s.expires_at
                    .timestamp_subsec_nanos()
                    .is_multiple_of(1_000_000),
            );
        self.q::<()>(
            ::redis::cmd("SET")
                .arg(self.k("session", &s.token_hash))
                .arg(encode(s)?)
                .arg("PXAT")
                .arg(ms.max(1)),
        )
        .await
    }

    async fn session(&self, token_hash: &str) -> StoreResult<Option<SessionRecord>> {
        self.get_json(&self.k("session", token_hash)).await
    }

    // --- Keys --------------------------------------------------------------

    async fn put_key(&self, key: &KeyRecord) -> StoreResult<()> {
        // Claim the hash first: a crash after it leaves a claim whose record
        // is missing (`key_by_hash` finds nothing; a retry with the same id
        // succeeds), never two keys answering to one hash.
        let claimed: Option<String> = self
            .q(::redis::cmd("SET")
                .arg(self.k("key_hash", &key.hash))
                .arg(&key.id)
                .arg("NX")
                .arg("GET"))
            .await?;
        if claimed.as_deref().is_some_and(|owner| owner != key.id) {
            return Err(StoreError::Conflict("key hash"));
        }
        let mut pipe = ::redis::pipe();
        pipe.cmd("HSET")
            .arg(self.k("key", &key.id))
            .arg("json")
            .arg(encode(key)?)
            .arg("status")
            .arg(status_text(key.status)?)
            .ignore();
        // Index sets may keep stale members after an owner or team change;
        // readers filter on the record itself.
        pipe.cmd("SADD")
            .arg(self.k("user_keys", &key.created_by))
            .arg(&key.id)
            .ignore();
        if let Some(team) = &key.team_id {
            pipe.cmd("SADD")
                .arg(self.k("team_keys", team))
                .arg(&key.id)
                .ignore();
        }
        self.p::<()>(&pipe).await
    }

    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<KeyRecord>> {
        let id: Option<String> = self
            .q(::redis::cmd("GET").arg(self.k("key_hash", hash)))
            .await?;
        match id {
            Some(id) => self.key(&id).await,
            None => Ok(None),
        }
    }

    async fn key(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        Ok(self.keys_by_ids(&[id.to_string()]).await?.pop())
    }

    async fn keys_of_user(&self, user_id: &str) -> StoreResult<Vec<KeyRecord>> {
        let ids = self.smembers(&self.k("user_keys", user_id)).await?;
        let mut keys: Vec<KeyRecord> = self
            .keys_by_ids(&ids)
            .await?
            .into_iter()
            .filter(|k| k.scope == KeyScope::Personal && k.created_by == user_id)
            .collect();
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    async fn set_key_status(&self, id: &str, status: KeyStatus) -> StoreResult<()> {
        let mut call = self.scripts.set_key_status.prepare_invoke();
        call.key(self.k("key", id)).arg(status_text(status)?);
        let mut c = self.conn.clone();
        let set: i64 = timed(call.invoke_async(&mut c)).await?;
        if set == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    // --- Wallets and the ledger -----------------------------------------------

    async fn wallet(&self, wallet_id: &str) -> StoreResult<WalletBalance> {
        let (paid, promo): (Option<String>, Option<String>) = self
            .q(::redis::cmd("HMGET")
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
            ::redis::cmd("SADD")
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
        match field(0) {
            Some("now") => Ok((Applied::Now, balance()?)),
            Some("before") => Ok((Applied::Before, balance()?)),
            Some("corrupt") => Err(StoreError::Corrupt(
                field(1).unwrap_or("batch refused").to_string(),
            )),
            other => Err(StoreError::Corrupt(format!(
                "apply script answered {other:?}"
            ))),
        }
    }

    async fn ledger(&self, wallet_id: &str) -> StoreResult<Vec<LedgerEntry>> {
        let key = self.wk(wallet_id, "ledger");
        let rows: Vec<String> = self
            .q(::redis::cmd("LRANGE").arg(&key).arg(0).arg(-1))
            .await?;
        rows.iter().map(|s| decode(&key, s)).collect()
    }

    async fn money_totals(&self) -> StoreResult<MoneyTotals> {
        let wallets = self.smembers(&self.wallets_key()).await?;
        let mut t = MoneyTotals::default();
        for chunk in wallets.chunks(CHUNK) {
            let mut pipe = ::redis::pipe();
            for w in chunk {
                pipe.cmd("HMGET")
                    .arg(self.wk(w, "bal"))
                    .arg("paid")
                    .arg("promo")
                    .arg("deposits")
                    .arg("usage");
            }
            type Row = (
                Option<String>,
                Option<String>,
                Option<String>,
                Option<String>,
            );
            let rows: Vec<Row> = self.p(&pipe).await?;
            for (paid, promo, deposits, usage) in rows {
                t.balances += nanos(paid.as_deref())? + nanos(promo.as_deref())?;
                t.deposits += nanos(deposits.as_deref())?;
                t.usage += nanos(usage.as_deref())?;
            }
        }
        Ok(t)
    }

    async fn ledger_entry(
        &self,
        wallet_id: &str,
        entry_id: &str,
    ) -> StoreResult<Option<LedgerEntry>> {
        let index: Option<i64> = self
            .q(::redis::cmd("HGET")
                .arg(self.wk(wallet_id, "entries"))
                .arg(entry_id))
            .await?;
        let Some(index) = index else {
            return Ok(None);
        };
        let key = self.wk(wallet_id, "ledger");
        let row: Option<String> = self.q(::redis::cmd("LINDEX").arg(&key).arg(index)).await?;
        match row {
            Some(s) => Ok(Some(decode(&key, &s)?)),
            None => Err(StoreError::Corrupt(format!(
                "{key}: entry {entry_id} indexed at {index}, which is missing"
            ))),
        }
    }

    // --- Usage day buckets ------------------------------------------------------

    async fn usage_rows(&self, wallet_id: &str, from: NaiveDate) -> StoreResult<Vec<UsageRow>> {
        let dates: Vec<String> = self
            .q(::redis::cmd("ZRANGEBYSCORE")
                .arg(self.wk(wallet_id, "usage_days"))
                .arg(from.num_days_from_ce())
                .arg("+inf"))
            .await?;
        let mut rows: BTreeMap<(NaiveDate, String, String), DayUsage> = BTreeMap::new();
        for chunk in dates.chunks(CHUNK) {
            let mut pipe = ::redis::pipe();
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
                .q(::redis::cmd("ZRANGEBYSCORE")
                    .arg(&days_key)
                    .arg("-inf")
                    .arg(&cutoff))
                .await?;
            if old.is_empty() {
                continue;
            }
            // One slot, one transaction: the index and the buckets go together.
            let mut pipe = ::redis::pipe();
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

    // --- Teams, members, invites ------------------------------------------------

    async fn put_team(&self, team: &TeamRecord) -> StoreResult<()> {
        let mut pipe = ::redis::pipe();
        pipe.cmd("SET")
            .arg(self.k("team", &team.id))
            .arg(encode(team)?)
            .ignore();
        pipe.cmd("SADD")
            .arg(self.k("owned_teams", &team.owner_id))
            .arg(&team.id)
            .ignore();
        self.p::<()>(&pipe).await
    }

    async fn team(&self, id: &str) -> StoreResult<Option<TeamRecord>> {
        self.get_json(&self.k("team", id)).await
    }

    async fn owned_team(&self, user_id: &str) -> StoreResult<Option<TeamRecord>> {
        let ids = self.smembers(&self.k("owned_teams", user_id)).await?;
        let keys: Vec<String> = ids.iter().map(|id| self.k("team", id)).collect();
        let teams: Vec<TeamRecord> = self.mget_json(&keys).await?;
        Ok(teams
            .into_iter()
            .filter(|t| t.owner_id == user_id && t.deleted_at.is_none())
            .min_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id))))
    }

    async fn put_member(&self, m: &MemberRecord) -> StoreResult<()> {
        let mut pipe = ::redis::pipe();
        pipe.cmd("HSET")
            .arg(self.k("members", &m.team_id))
            .arg(&m.user_id)
            .arg(encode(m)?)
            .ignore();
        pipe.cmd("SADD")
            .arg(self.k("memberships", &m.user_id))
            .arg(&m.team_id)
            .ignore();
        self.p::<()>(&pipe).await
    }

    async fn member(&self, team_id: &str, user_id: &str) -> StoreResult<Option<MemberRecord>> {
        let key = self.k("members", team_id);
        let v: Option<String> = self.q(::redis::cmd("HGET").arg(&key).arg(user_id)).await?;
        v.map(|s| decode(&key, &s)).transpose()
    }

    async fn members(&self, team_id: &str) -> StoreResult<Vec<MemberRecord>> {
        let key = self.k("members", team_id);
        let rows: Vec<String> = self.q(::redis::cmd("HVALS").arg(&key)).await?;
        let mut v = rows
            .iter()
            .map(|s| decode(&key, s))
            .collect::<StoreResult<Vec<MemberRecord>>>()?;
        v.sort_by(|a, b| (a.joined_at, &a.user_id).cmp(&(b.joined_at, &b.user_id)));
        Ok(v)
    }

    async fn memberships(&self, user_id: &str) -> StoreResult<Vec<MemberRecord>> {
        let teams = self.smembers(&self.k("memberships", user_id)).await?;
        let mut v = Vec::with_capacity(teams.len());
        for chunk in teams.chunks(CHUNK) {
            let mut pipe = ::redis::pipe();
            for t in chunk {
                pipe.cmd("HGET").arg(self.k("members", t)).arg(user_id);
            }
            let rows: Vec<Option<String>> = self.p(&pipe).await?;
            for row in rows.into_iter().flatten() {
                let m: MemberRecord = decode("member", &row)?;
                if m.user_id == user_id && m.active() {
                    v.push(m);
                }
            }
        }
        v.sort_by(|a, b| (a.joined_at, &a.team_id).cmp(&(b.joined_at, &b.team_id)));
        Ok(v)
    }

    async fn put_invite(&self, inv: &InviteRecord) -> StoreResult<()> {
        // The record before its indexes: an index never points at nothing
        // for longer than a failed call.
        let mut pipe = ::redis::pipe();
        pipe.cmd("SET")
            .arg(self.k("invite", &inv.id))
            .arg(encode(inv)?)
            .ignore();
        pipe.cmd("SET")
            .arg(self.k("invite_token", &inv.token_hash))
            .arg(&inv.id)
            .ignore();
        pipe.cmd("SADD")
            .arg(self.k("team_invites", &inv.team_id))
            .arg(&inv.id)
            .ignore();
        self.p::<()>(&pipe).await
    }

    async fn invite(&self, id: &str) -> StoreResult<Option<InviteRecord>> {
        self.get_json(&self.k("invite", id)).await
    }

    async fn invite_by_token(&self, token_hash: &str) -> StoreResult<Option<InviteRecord>> {
        let id: Option<String> = self
            .q(::redis::cmd("GET").arg(self.k("invite_token", token_hash)))
            .await?;
        match id {
            Some(id) => self.invite(&id).await,
            None => Ok(None),
        }
    }

    async fn invites(&self, team_id: &str) -> StoreResult<Vec<InviteRecord>> {
        let ids = self.smembers(&self.k("team_invites", team_id)).await?;
        let keys: Vec<String> = ids.iter().map(|id| self.k("invite", id)).collect();
        let mut v: Vec<InviteRecord> = self
            .mget_json::<InviteRecord>(&keys)
            .await?
            .into_iter()
            .filter(|i| i.team_id == team_id)
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    async fn team_keys(&self, team_id: &str) -> StoreResult<Vec<KeyRecord>> {
        let ids = self.smembers(&self.k("team_keys", team_id)).await?;
        let mut v: Vec<KeyRecord> = self
            .keys_by_ids(&ids)
            .await?
            .into_iter()
            .filter(|k| k.team_id.as_deref() == Some(team_id))
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    // --- Outbox and events ----------------------------------------------------------

    async fn put_outbox(&self, m: &OutboxMessage) -> StoreResult<()> {
        let (messages, order) = self.outbox_keys();
        let mut call = self.scripts.put_outbox.prepare_invoke();
        call.key(messages).key(order).arg(&m.id).arg(encode(m)?);
        let mut c = self.conn.clone();
        timed(call.invoke_async::<i64>(&mut c)).await.map(|_| ())
    }

    async fn outbox(&self) -> StoreResult<Vec<OutboxMessage>> {
        let (messages, order) = self.outbox_keys();
        let ids: Vec<String> = self
            .q(::redis::cmd("LRANGE").arg(&order).arg(0).arg(-1))
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let rows: Vec<Option<String>> = self
                .q(::redis::cmd("HMGET").arg(&messages).arg(chunk))
                .await?;
            for row in rows.into_iter().flatten() {
                out.push(decode(&messages, &row)?);
            }
        }
        Ok(out)
    }

    async fn append_event(&self, e: &EventRecord) -> StoreResult<()> {
        self.q::<()>(
            ::redis::cmd("RPUSH")
                .arg(self.k("events", &e.team_id))
                .arg(encode(e)?),
        )
        .await
    }

    async fn events(&self, team_id: &str) -> StoreResult<Vec<EventRecord>> {
        let key = self.k("events", team_id);
        let rows: Vec<String> = self
            .q(::redis::cmd("LRANGE").arg(&key).arg(0).arg(-1))
            .await?;
        rows.iter().map(|s| decode(&key, s)).collect()
    }

    // --- Transfers ---------------------------------------------------------------------

    async fn put_transfer(&self, t: &TransferRecord) -> StoreResult<()> {
        self.q::<()>(
            ::redis::cmd("HSET")
                .arg(self.transfers_key())
                .arg(&t.id)
                .arg(encode(t)?),
        )
        .await
    }

    async fn finish_transfer(&self, id: &str) -> StoreResult<()> {
        self.q::<()>(::redis::cmd("HDEL").arg(self.transfers_key()).arg(id))
            .await
    }

    async fn unfinished_transfers(&self) -> StoreResult<Vec<TransferRecord>> {
        let key = self.transfers_key();
        let rows: Vec<String> = self.q(::redis::cmd("HVALS").arg(&key)).await?;
        let mut v = rows
            .iter()
            .map(|s| decode(&key, s))
            .collect::<StoreResult<Vec<TransferRecord>>>()?;
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    // --- Scale-out --------------------------------------------------------------------------

    async fn publish(&self, change: &Change) -> StoreResult<()> {
        self.q::<()>(
            ::redis::cmd("PUBLISH")
                .arg(self.channel())
                .arg(encode(change)?),
        )
        .await
    }

    /// A task with its own pub/sub connection feeds the receiver until the
    /// receiver is dropped (that is what ends the task), reconnecting with
    /// backoff. Pub/sub is fire-and-forget: a change published while this
    /// subscriber was disconnected is not replayed. This instance's own
    /// changes come back too; invalidations are idempotent.
    fn subscribe(&self) -> Option<mpsc::UnboundedReceiver<Change>> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("Store::subscribe called outside a tokio runtime; not subscribed");
            return None;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        runtime.spawn(relay_changes(self.client.clone(), self.channel(), tx));
        Some(rx)
    }

    // --- Idempotency records --------------------------------------------------------------

    async fn idempotency(&self, scope_key: &str) -> StoreResult<Option<IdempotencyRecord>> {
        self.get_json(&self.k("idem", scope_key)).await
    }

    async fn put_idempotency(&self, scope_key: &str, rec: &IdempotencyRecord) -> StoreResult<()> {
        self.set_json(&self.k("idem", scope_key), rec).await
    }
}

// --- Pub/sub ------------------------------------------------------------------------

enum Ended {
    /// The receiver was dropped: stop for good.
    ReceiverGone,
    /// The connection failed or went quiet: reconnect.
    Lost(String),
}

async fn relay_changes(client: Client, channel: String, tx: mpsc::UnboundedSender<Change>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        match listen(&client, &channel, &tx, &mut backoff).await {
            Ended::ReceiverGone => return,
            Ended::Lost(why) => {
                tracing::warn!(error = %why, retry_in = ?backoff, "change subscription lost; reconnecting");
            }
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn listen(
    client: &Client,
    channel: &str,
    tx: &mpsc::UnboundedSender<Change>,
    backoff: &mut Duration,
) -> Ended {
    let pubsub = match tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Ended::Lost(e.to_string()),
        Err(_) => return Ended::Lost("connect timed out".into()),
    };
    let (mut sink, mut stream) = pubsub.split();
    match tokio::time::timeout(OP_TIMEOUT, sink.subscribe(channel)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Ended::Lost(e.to_string()),
        Err(_) => return Ended::Lost("SUBSCRIBE timed out".into()),
    }
    *backoff = MIN_BACKOFF;
    tracing::debug!(%channel, "subscribed to store changes");
    let mut ping = tokio::time::interval(SUBSCRIBER_PING);
    ping.tick().await;
    loop {
        tokio::select! {
            _ = tx.closed() => return Ended::ReceiverGone,
            msg = stream.next() => {
                let Some(msg) = msg else {
                    return Ended::Lost("connection closed".into());
                };
                match serde_json::from_slice::<Change>(msg.get_payload_bytes()) {
                    Ok(change) => {
                        if tx.send(change).is_err() {
                            return Ended::ReceiverGone;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring a malformed change message"),
                }
            }
            _ = ping.tick() => {
                match tokio::time::timeout(OP_TIMEOUT, sink.ping::<Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Ended::Lost(e.to_string()),
                    Err(_) => return Ended::Lost("PING timed out".into()),
                }
            }
        }
    }
}

// --- Helpers -------------------------------------------------------------------------

/// Bound one round trip and translate its error.
async fn timed<T>(fut: impl Future<Output = RedisResult<T>>) -> StoreResult<T> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(store_error(e)),
        Err(_) => Err(StoreError::Unavailable(format!(
            "redis did not answer within {OP_TIMEOUT:?}"
        ))),
    }
}

/// Data that cannot be read as expected is `Corrupt`; everything else (no
/// connection, timeouts, a loading or read-only server) is `Unavailable`,
/// which callers retry: safe, since every write is idempotent.
fn store_error(e: RedisError) -> StoreError {
    use ::redis::ErrorKind;
    match e.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => StoreError::Corrupt(e.to_string()),
        _ if e.code() == Some("WRONGTYPE") => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

fn encode<T: Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("cannot encode: {e}")))
}

fn decode<T: DeserializeOwned>(what: &str, s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
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

/// The serde name of a status (`"active"`), as the record hash stores it.
fn status_text(s: KeyStatus) -> StoreResult<String> {
    match serde_json::to_value(s) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        _ => Err(StoreError::Corrupt(format!("key status {s:?} has no name"))),
    }
}

/// The field of one counter in a day's usage hash: a JSON array, so ids
/// with any characters stay unambiguous.
fn usage_field(key_id: &str, member_id: &str, counter: &str) -> StoreResult<String> {
    encode(&(key_id, member_id, counter))
}

/// A `keyused` value: zero-padded nanoseconds since the epoch.
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    s.parse::<i64>().ok().map(DateTime::from_timestamp_nanos)
}
