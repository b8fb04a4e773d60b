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
//! - `P{w}:bal`        hash: `paid`, `promo`, `deposits`, `deposits_hi`,
//!   `usage`, `usage_hi` (integer nanos; a counter is `X_hi * 4e18 + X`)
//! - `P{w}:ledger`     list of `LedgerEntry` JSON, in apply order; only
//!   without `ledger_url`, and pruned after `ledger_retention_days` (G3)
//! - `P{w}:export`     stream of `LedgerEntry` JSON (field `e`) waiting for
//!   the exporter to copy them to PostgreSQL; only with `ledger_url` (G2)
//! - `P{w}:entries`    hash: id -> JSON of every deposit and transfer entry,
//!   kept for good (they grow with accounts, not requests)
//! - `P{w}:hw:WRITER`  a writer's highest applied batch sequence, and
//!   `P{w}:batch:ID`   a batch id without one; both expire after
//!   `batch_id_ttl_s` (G1)
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
//! `apply` is one Lua script (`apply.lua`, beside this file): it checks everything
//! (batch seen -> `Before` with the stored balance: a sequence at or below
//! its writer's high-water mark, a remembered batch id, or deposits and
//! transfers all kept by id already; every entry is for this wallet; B10: no balance part, no
//! paid + promo and no usage counter past i64, compared exactly) before its
//! first write, because Redis scripts do not roll back; a range refusal
//! comes back as `StoreError::OutOfRange`. The reconciliation counters
//! `deposits` and `usage` only grow and may pass i64 over a wallet's life:
//! the script carries them in units of 4e18 into `deposits_hi` /
//! `usage_hi`, and `money_totals` sums every wallet in i128 (see
//! `apply.lua`). Amounts cross as integer strings into `HINCRBY`; Lua never writes
//! a sum of its own (its numbers are doubles; the range checks add exact
//! 9-digit halves). The batch's sequence (or id) is remembered in
//! the same script, for `batch_id_ttl_s`, so a batch whose answer was
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
//!
//! # Files
//! This file holds the connection, the key names and the bounded round
//! trips; `keys.rs` the key records (with `last_used_at` merged from the
//! wallet), `records.rs` every other record (users, sessions, teams,
//! members, invites, the outbox, events, transfers, idempotency),
//! `ledger.rs` wallets and `apply` (with its Lua), `usage.rs` the day
//! buckets, and `pubsub.rs` the change feed between instances.

mod export;
mod keys;
mod ledger;
mod limits;
mod pubsub;
mod records;
mod usage;
mod webhooks;

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use chrono::NaiveDate;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Cmd, FromRedisValue, Pipeline, RedisError, RedisResult, Script};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{ExportSignal, LedgerPolicy, StoreError, StoreInfo, StoreResult};

/// How long one round trip may take before the caller hears `Unavailable`.
/// Bounded so a dead Redis makes requests fail fast (503) instead of hang;
/// a write that did land after the deadline is made harmless by batch ids.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// One connection attempt (the manager's, and the pub/sub task's).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Wallets or ids per pipeline when reading many records.
const CHUNK: usize = 500;

/// Scripts are versioned in their first line; Redis caches them by SHA-1,
/// and `Script` reloads them after a restart emptied that cache (NOSCRIPT).
struct Scripts {
    apply: Script,
    set_key_status: Script,
    put_outbox: Script,
    export_ack: Script,
    prune_ledger: Script,
}

pub struct RedisStore {
    /// Cloned per call (an `Arc` inside): one multiplexed connection that
    /// reconnects by itself after Redis comes back.
    conn: ConnectionManager,
    /// For the dedicated pub/sub connections `subscribe` opens.
    client: Client,
    prefix: String,
    scripts: Scripts,
    /// How ledger entries are kept (G1-G3).
    policy: LedgerPolicy,
    /// Wallets this process exported to, for the exporter (G2).
    signal: ExportSignal,
    /// Woken when this process appends an event (the webhook worker).
    events_appended: std::sync::Arc<tokio::sync::Notify>,
}

impl RedisStore {
    /// Keep ledger entries as `policy` says (G1-G3); set before serving.
    pub fn with_policy(mut self, policy: LedgerPolicy) -> RedisStore {
        self.policy = policy;
        self
    }

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
                apply: Script::new(include_str!("apply.lua")),
                set_key_status: Script::new(include_str!("set_key_status.lua")),
                put_outbox: Script::new(include_str!("put_outbox.lua")),
                export_ack: Script::new(include_str!("export_ack.lua")),
                prune_ledger: Script::new(include_str!("prune_ledger.lua")),
            },
            policy: LedgerPolicy::default(),
            signal: ExportSignal::default(),
            events_appended: std::sync::Arc::new(tokio::sync::Notify::new()),
        };
        store.ping().await?;
        store.warn_without_aof().await;
        Ok(store)
    }

    /// Durability is Redis's job; say so when it is not configured for it.
    async fn warn_without_aof(&self) {
        let mut info = redis::cmd("INFO");
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
        let v: Option<String> = self.q(redis::cmd("GET").arg(key)).await?;
        v.map(|s| decode(key, &s)).transpose()
    }

    async fn set_json<T: Serialize>(&self, key: &str, v: &T) -> StoreResult<()> {
        let body = encode(v)?;
        self.q::<()>(redis::cmd("SET").arg(key).arg(body)).await
    }

    async fn smembers(&self, key: &str) -> StoreResult<Vec<String>> {
        self.q(redis::cmd("SMEMBERS").arg(key)).await
    }

    /// `GET` many JSON records by key, skipping missing ones.
    async fn mget_json<T: DeserializeOwned>(&self, keys: &[String]) -> StoreResult<Vec<T>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(CHUNK) {
            let vals: Vec<Option<String>> = self.q(redis::cmd("MGET").arg(chunk)).await?;
            for (key, v) in chunk.iter().zip(vals) {
                if let Some(s) = v {
                    out.push(decode(key, &s)?);
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl StoreInfo for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> StoreResult<()> {
        let pong: String = self.q(&redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!("PING answered {pong:?}")))
        }
    }
}

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
    use redis::ErrorKind;
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
