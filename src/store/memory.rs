//! The embedded memory store: everything in this process, for a first run,
//! the demo and fast tests. Nothing survives a restart, and start-up says
//! so loudly.
//!
//! One `std::sync::Mutex` over all maps, never held across an `.await`:
//! the store is off the hot path (key-cache misses, flushes, management
//! calls), and one lock makes every batch trivially atomic.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use super::*;
use crate::money::Nanos;

mod limits;
mod webhooks;

#[derive(Default)]
struct Inner {
    users: HashMap<String, UserRecord>,
    users_by_email: HashMap<String, String>,
    sessions: HashMap<String, SessionRecord>,
    keys: HashMap<String, KeyRecord>,
    keys_by_hash: HashMap<String, String>,
    wallets: HashMap<String, WalletBalance>,
    /// G3: every wallet's entries in apply order, at most
    /// `policy.memory_entries`, oldest dropped (unused when exporting).
    kept: VecDeque<Kept>,
    /// The wallet ids `kept` names, one allocation per wallet.
    wallet_ids: std::collections::HashSet<Arc<str>>,
    /// Deposits and transfers by id, kept for good (they grow with
    /// accounts): replays of them are recognised however late.
    money: HashMap<String, LedgerEntry>,
    /// Batch ids without a sequence, until they expire (G1).
    batch_ids: HashMap<String, Instant>,
    /// (wallet, writer) -> the highest sequence applied, and its expiry.
    high_water: HashMap<(String, u64), (u64, Instant)>,
    /// G2: per wallet, the entries not yet in PostgreSQL, with cursors.
    export: HashMap<String, VecDeque<(u64, LedgerEntry)>>,
    export_next: u64,
    /// wallet -> (date, key, member) -> counters.
    usage: HashMap<String, BTreeMap<(NaiveDate, String, String), DayUsage>>,
    idempotency: HashMap<String, IdempotencyRecord>,
    totals: MoneyTotals,
    teams: HashMap<String, TeamRecord>,
    members: HashMap<(String, String), MemberRecord>,
    invites: HashMap<String, InviteRecord>,
    invites_by_token: HashMap<String, String>,
    outbox: Vec<OutboxMessage>,
    events: Vec<EventRecord>,
    transfers: HashMap<String, TransferRecord>,
    /// Limits records by subject id (Q1-Q3; memory/limits.rs).
    limits: HashMap<String, LimitsRecord>,
    /// Webhooks, deliveries, the fan-out queue, alerts (memory/webhooks.rs).
    notify: webhooks::NotifyData,
}

/// One retained ledger entry (G3), compact: its fields as a JSON array in
/// one allocation, wallet and time apart (about 170 bytes for a
/// settlement, against about 550 as a `LedgerEntry` of seven strings), so
/// the full ring of 100,000 stays near 25 MB.
struct Kept {
    wallet_id: Arc<str>,
    at: DateTime<Utc>,
    json: Box<[u8]>,
}

pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    policy: Arc<LedgerPolicy>,
    signal: ExportSignal,
    /// Batches go to one applier thread of the store's own.
    applier: std::sync::mpsc::Sender<ApplyJob>,
    events_appended: Arc<tokio::sync::Notify>,
}

/// A batch for the applier thread, and where its answer goes.
struct ApplyJob {
    batch: WalletBatch,
    reply: tokio::sync::oneshot::Sender<StoreResult<(Applied, WalletBalance)>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::with_policy(LedgerPolicy::default())
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// A store that keeps ledger entries as `policy` says (G1-G3).
    ///
    /// `apply` runs off the async workers, on one thread of the store's
    /// own: as a load test piles up entries a batch sometimes waits for a
    /// map's rehash (tens of ms, benches/store_apply.rs), which on a worker
    /// stalled every request queued behind it. One thread, not the blocking
    /// pool: batches take one lock anyway, and a pool that grows threads
    /// under load grew malloc arenas with them (tens of MB of RSS).
    pub fn with_policy(policy: LedgerPolicy) -> MemoryStore {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let policy = Arc::new(policy);
        let (applier, jobs) = std::sync::mpsc::channel::<ApplyJob>();
        let (state, rules) = (inner.clone(), policy.clone());
        // Ends when the store (the sender) is dropped.
        let spawned = std::thread::Builder::new()
            .name("memory-store-apply".into())
            .spawn(move || {
                for job in jobs {
                    let done = apply_batch(&mut lock(&state), &rules, job.batch);
                    let _ = job.reply.send(done);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "memory store: no applier thread; every apply will fail");
        }
        MemoryStore {
            inner,
            policy,
            signal: ExportSignal::default(),
            applier,
            events_appended: Arc::new(tokio::sync::Notify::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic while holding the lock cannot leave a half-applied batch
    // (batches are checked before they are written), so keep serving.
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl StoreInfo for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

#[async_trait]
impl UserStore for MemoryStore {
    async fn create_user(&self, user: &UserRecord) -> StoreResult<()> {
        let mut g = self.lock();
        if g.users_by_email.contains_key(&user.email_norm) {
            return Err(StoreError::Conflict("email"));
        }
        g.users_by_email
            .insert(user.email_norm.clone(), user.id.clone());
        g.users.insert(user.id.clone(), user.clone());
        Ok(())
    }

    async fn user_by_email(&self, email_norm: &str) -> StoreResult<Option<UserRecord>> {
        let g = self.lock();
        Ok(g.users_by_email
            .get(email_norm)
            .and_then(|id| g.users.get(id))
            .cloned())
    }

    async fn user(&self, id: &str) -> StoreResult<Option<UserRecord>> {
        Ok(self.lock().users.get(id).cloned())
    }

    async fn put_session(&self, s: &SessionRecord) -> StoreResult<()> {
        self.lock().sessions.insert(s.token_hash.clone(), s.clone());
        Ok(())
    }

    async fn session(&self, token_hash: &str) -> StoreResult<Option<SessionRecord>> {
        Ok(self.lock().sessions.get(token_hash).cloned())
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn put_key(&self, key: &KeyRecord) -> StoreResult<()> {
        let mut g = self.lock();
        if let Some(id) = g.keys_by_hash.get(&key.hash) {
            if *id != key.id {
                return Err(StoreError::Conflict("key hash"));
            }
        }
        g.keys_by_hash.insert(key.hash.clone(), key.id.clone());
        g.keys.insert(key.id.clone(), key.clone());
        Ok(())
    }

    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<KeyRecord>> {
        let g = self.lock();
        Ok(g.keys_by_hash
            .get(hash)
            .and_then(|id| g.keys.get(id))
            .cloned())
    }

    async fn key(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        Ok(self.lock().keys.get(id).cloned())
    }

    async fn keys_of_user(&self, user_id: &str) -> StoreResult<Vec<KeyRecord>> {
        let g = self.lock();
        let mut keys: Vec<KeyRecord> = g
            .keys
            .values()
            .filter(|k| k.scope == KeyScope::Personal && k.created_by == user_id)
            .cloned()
            .collect();
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    async fn set_key_status(&self, id: &str, status: KeyStatus) -> StoreResult<()> {
        let mut g = self.lock();
        let key = g.keys.get_mut(id).ok_or(StoreError::NotFound)?;
        key.status = status;
        Ok(())
    }

    async fn team_keys(&self, team_id: &str) -> StoreResult<Vec<KeyRecord>> {
        let mut v: Vec<KeyRecord> = self
            .lock()
            .keys
            .values()
            .filter(|k| k.team_id.as_deref() == Some(team_id))
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }
}

#[async_trait]
impl LedgerStore for MemoryStore {
    async fn wallet(&self, wallet_id: &str) -> StoreResult<WalletBalance> {
        Ok(self
            .lock()
            .wallets
            .get(wallet_id)
            .copied()
            .unwrap_or_default())
    }

    async fn apply(&self, batch: &WalletBatch) -> StoreResult<(Applied, WalletBalance)> {
        // On the applier thread (see `with_policy`).
        let stopped = || StoreError::Unavailable("memory store applier stopped".into());
        let (reply, answer) = tokio::sync::oneshot::channel();
        let batch_wallet = batch.wallet_id.clone();
        self.applier
            .send(ApplyJob {
                batch: batch.clone(),
                reply,
            })
            .map_err(|_| stopped())?;
        let applied = answer.await.map_err(|_| stopped())??;
        if self.policy.export && applied.0 == Applied::Now {
            self.signal.mark(&batch_wallet);
        }
        Ok(applied)
    }

    /// The entries still held here: the retained ones (G3), or, when
    /// exporting, the wallet's deposits and transfers.
    async fn ledger(&self, wallet_id: &str) -> StoreResult<Vec<LedgerEntry>> {
        let g = self.lock();
        if self.policy.export {
            let mut v: Vec<LedgerEntry> = g
                .money
                .values()
                .filter(|e| e.wallet_id == wallet_id)
                .cloned()
                .collect();
            v.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
            return Ok(v);
        }
        g.kept
            .iter()
            .filter(|k| &*k.wallet_id == wallet_id)
            .map(unpack)
            .collect()
    }

    async fn money_totals(&self) -> StoreResult<MoneyTotals> {
        Ok(self.lock().totals)
    }

    async fn ledger_entry(
        &self,
        wallet_id: &str,
        entry_id: &str,
    ) -> StoreResult<Option<LedgerEntry>> {
        let g = self.lock();
        Ok(g.money
            .get(entry_id)
            .filter(|e| e.wallet_id == wallet_id)
            .cloned())
    }
}

#[async_trait]
impl ExportStore for MemoryStore {
    fn export_dirty(&self) -> Vec<String> {
        self.signal.take()
    }

    fn export_wake(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.signal.notify.clone()
    }

    async fn export_wallets(&self) -> StoreResult<Vec<String>> {
        let g = self.lock();
        Ok(g.export
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(w, _)| w.clone())
            .collect())
    }

    async fn export_read(&self, wallet_id: &str, max: usize) -> StoreResult<Vec<Exported>> {
        let g = self.lock();
        Ok(g.export
            .get(wallet_id)
            .map(|q| {
                q.iter()
                    .take(max)
                    .map(|(c, e)| Exported {
                        cursor: c.to_string(),
                        entry: e.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn export_ack(&self, wallet_id: &str, cursors: &[String]) -> StoreResult<()> {
        let mut g = self.lock();
        let acked: std::collections::HashSet<u64> =
            cursors.iter().filter_map(|c| c.parse().ok()).collect();
        if let Some(q) = g.export.get_mut(wallet_id) {
            q.retain(|(c, _)| !acked.contains(c));
            if q.is_empty() {
                g.export.remove(wallet_id);
            }
        }
        Ok(())
    }

    async fn export_backlog(&self, wallet_id: &str) -> StoreResult<u64> {
        Ok(self
            .lock()
            .export
            .get(wallet_id)
            .map_or(0, |q| q.len() as u64))
    }

    async fn prune_ledger(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let mut g = self.lock();
        let now = Instant::now();
        g.batch_ids.retain(|_, until| *until > now);
        g.high_water.retain(|_, (_, until)| *until > now);
        let mut dropped = 0;
        while g.kept.front().is_some_and(|k| k.at < before) {
            g.kept.pop_front();
            dropped += 1;
        }
        Ok(dropped)
    }
}

#[async_trait]
impl UsageStore for MemoryStore {
    async fn usage_rows(&self, wallet_id: &str, from: NaiveDate) -> StoreResult<Vec<UsageRow>> {
        let g = self.lock();
        let Some(rows) = g.usage.get(wallet_id) else {
            return Ok(Vec::new());
        };
        Ok(rows
            .range((from, String::new(), String::new())..)
            .map(|((date, key_id, member_id), u)| UsageRow {
                wallet_id: wallet_id.to_string(),
                key_id: key_id.clone(),
                member_id: member_id.clone(),
                date: *date,
                usage: *u,
            })
            .collect())
    }

    async fn prune_usage(&self, before: NaiveDate) -> StoreResult<()> {
        let mut g = self.lock();
        for rows in g.usage.values_mut() {
            *rows = rows.split_off(&(before, String::new(), String::new()));
        }
        Ok(())
    }
}

#[async_trait]
impl TeamStore for MemoryStore {
    async fn put_team(&self, team: &TeamRecord) -> StoreResult<()> {
        self.lock().teams.insert(team.id.clone(), team.clone());
        Ok(())
    }

    async fn team(&self, id: &str) -> StoreResult<Option<TeamRecord>> {
        Ok(self.lock().teams.get(id).cloned())
    }

    async fn owned_team(&self, user_id: &str) -> StoreResult<Option<TeamRecord>> {
        Ok(self
            .lock()
            .teams
            .values()
            .find(|t| t.owner_id == user_id && t.deleted_at.is_none())
            .cloned())
    }

    async fn put_member(&self, m: &MemberRecord) -> StoreResult<()> {
        self.lock()
            .members
            .insert((m.team_id.clone(), m.user_id.clone()), m.clone());
        Ok(())
    }

    async fn member(&self, team_id: &str, user_id: &str) -> StoreResult<Option<MemberRecord>> {
        Ok(self
            .lock()
            .members
            .get(&(team_id.to_string(), user_id.to_string()))
            .cloned())
    }

    async fn members(&self, team_id: &str) -> StoreResult<Vec<MemberRecord>> {
        let mut v: Vec<MemberRecord> = self
            .lock()
            .members
            .values()
            .filter(|m| m.team_id == team_id)
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.joined_at, &a.user_id).cmp(&(b.joined_at, &b.user_id)));
        Ok(v)
    }

    async fn memberships(&self, user_id: &str) -> StoreResult<Vec<MemberRecord>> {
        let mut v: Vec<MemberRecord> = self
            .lock()
            .members
            .values()
            .filter(|m| m.user_id == user_id && m.active())
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.joined_at, &a.team_id).cmp(&(b.joined_at, &b.team_id)));
        Ok(v)
    }

    async fn put_invite(&self, inv: &InviteRecord) -> StoreResult<()> {
        let mut g = self.lock();
        g.invites_by_token
            .insert(inv.token_hash.clone(), inv.id.clone());
        g.invites.insert(inv.id.clone(), inv.clone());
        Ok(())
    }

    async fn invite(&self, id: &str) -> StoreResult<Option<InviteRecord>> {
        Ok(self.lock().invites.get(id).cloned())
    }

    async fn invite_by_token(&self, token_hash: &str) -> StoreResult<Option<InviteRecord>> {
        let g = self.lock();
        Ok(g.invites_by_token
            .get(token_hash)
            .and_then(|id| g.invites.get(id))
            .cloned())
    }

    async fn invites(&self, team_id: &str) -> StoreResult<Vec<InviteRecord>> {
        let mut v: Vec<InviteRecord> = self
            .lock()
            .invites
            .values()
            .filter(|i| i.team_id == team_id)
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn put_outbox(&self, m: &OutboxMessage) -> StoreResult<()> {
        let mut g = self.lock();
        match g.outbox.iter_mut().find(|o| o.id == m.id) {
            Some(o) => *o = m.clone(),
            None => g.outbox.push(m.clone()),
        }
        Ok(())
    }

    async fn outbox(&self) -> StoreResult<Vec<OutboxMessage>> {
        Ok(self.lock().outbox.clone())
    }

    async fn append_event(&self, e: &EventRecord) -> StoreResult<()> {
        let mut g = self.lock();
        g.events.push(e.clone());
        g.notify.fanout.push_back(e.clone());
        drop(g);
        self.events_appended.notify_one();
        Ok(())
    }

    fn events_appended(&self) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.events_appended.clone())
    }

    async fn events(&self, team_id: &str) -> StoreResult<Vec<EventRecord>> {
        Ok(self
            .lock()
            .events
            .iter()
            .filter(|e| e.team_id == team_id)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl TransferStore for MemoryStore {
    async fn put_transfer(&self, t: &TransferRecord) -> StoreResult<()> {
        self.lock().transfers.insert(t.id.clone(), t.clone());
        Ok(())
    }

    async fn finish_transfer(&self, id: &str) -> StoreResult<()> {
        self.lock().transfers.remove(id);
        Ok(())
    }

    async fn unfinished_transfers(&self) -> StoreResult<Vec<TransferRecord>> {
        let mut v: Vec<TransferRecord> = self.lock().transfers.values().cloned().collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn idempotency(&self, scope_key: &str) -> StoreResult<Option<IdempotencyRecord>> {
        Ok(self.lock().idempotency.get(scope_key).cloned())
    }

    async fn put_idempotency(&self, scope_key: &str, rec: &IdempotencyRecord) -> StoreResult<()> {
        self.lock()
            .idempotency
            .insert(scope_key.to_string(), rec.clone());
        Ok(())
    }
}

/// One process, nobody to tell: the defaults (nothing published, no feed).
impl ChangeFeed for MemoryStore {}

/// One batch, whole or not at all (the checks run before the first write).
/// Takes the batch's copy made for the blocking thread and keeps its
/// entries, rather than cloning each again.
fn apply_batch(
    g: &mut Inner,
    policy: &LedgerPolicy,
    batch: WalletBatch,
) -> StoreResult<(Applied, WalletBalance)> {
    if applied_before(g, &batch)? {
        let after = g.wallets.get(&batch.wallet_id).copied().unwrap_or_default();
        return Ok((Applied::Before, after));
    }
    if policy.export {
        let waiting = g.export.get(&batch.wallet_id).map_or(0, VecDeque::len);
        // An empty queue takes any batch (see apply.lua).
        if waiting > 0 && (waiting + batch.entries.len()) as u64 > policy.backlog_max {
            return Err(StoreError::Unavailable(format!(
                "ledger export backlog of wallet {} is full ({waiting} entries)",
                batch.wallet_id
            )));
        }
    }
    let after = balance_after(g, &batch)?;
    remember_batch(g, policy, &batch);
    g.wallets.insert(batch.wallet_id.clone(), after);
    count_usage(g, &batch);
    keep_entries(g, policy, batch);
    Ok((Applied::Now, after))
}

/// Whether this batch was applied before (its id or sequence is
/// remembered, or all its entries are money movements already kept);
/// refuses a batch that is malformed or half-known.
fn applied_before(g: &Inner, batch: &WalletBatch) -> StoreResult<bool> {
    let now = Instant::now();
    let seen = match batch.seq {
        Some(BatchSeq { writer, seq }) => g
            .high_water
            .get(&(batch.wallet_id.clone(), writer))
            .is_some_and(|(hw, until)| *until > now && *hw >= seq),
        None => g
            .batch_ids
            .get(&batch.batch_id)
            .is_some_and(|until| *until > now),
    };
    if seen {
        return Ok(true);
    }
    let mut known = 0;
    for e in &batch.entries {
        if e.wallet_id != batch.wallet_id {
            return Err(StoreError::Corrupt(format!(
                "entry {} is for wallet {}, batch for {}",
                e.id, e.wallet_id, batch.wallet_id
            )));
        }
        if e.is_money_movement() && g.money.contains_key(&e.id) {
            known += 1;
        }
    }
    match known {
        0 => Ok(false),
        k if k == batch.entries.len() => Ok(true),
        _ => Err(StoreError::Corrupt(format!(
            "batch {} repeats entries applied before",
            batch.batch_id
        ))),
    }
}

fn remember_batch(g: &mut Inner, policy: &LedgerPolicy, batch: &WalletBatch) {
    let until = Instant::now() + policy.batch_id_ttl;
    match batch.seq {
        Some(BatchSeq { writer, seq }) => {
            g.high_water
                .insert((batch.wallet_id.clone(), writer), (seq, until));
        }
        None => {
            g.batch_ids.insert(batch.batch_id.clone(), until);
        }
    }
}

/// Totals, usage rows and last-used times from the batch's entries.
fn count_usage(g: &mut Inner, batch: &WalletBatch) {
    // This wallet's usage rows, looked up once a batch.
    let mut usage = None;
    for e in &batch.entries {
        let amount = i128::from(e.paid.0) + i128::from(e.promo.0);
        // Totals in i128: they never overflow nor clip (B8, B10).
        g.totals.balances.0 += amount;
        match e.kind {
            EntryKind::Deposit => g.totals.deposits.0 += amount,
            EntryKind::Settlement => g.totals.usage.0 -= amount,
            EntryKind::TransferIn | EntryKind::TransferOut => {}
        }
        if let Some(u) = &e.usage {
            if let Some(k) = g.keys.get_mut(&u.key_id) {
                k.last_used_at = k.last_used_at.max(Some(e.at));
            }
            let days = match usage.take() {
                Some(d) => d,
                None => g.usage.entry(batch.wallet_id.clone()).or_default(),
            };
            days.entry((e.at.date_naive(), u.key_id.clone(), u.member_id.clone()))
                .or_default()
                .add(&u.usage, Nanos::ZERO - e.amount());
            usage = Some(days);
        }
    }
}

/// The entries themselves: to the export queue (G2) or the bounded ring
/// (G3); deposits and transfers also by id.
fn keep_entries(g: &mut Inner, policy: &LedgerPolicy, batch: WalletBatch) {
    for e in &batch.entries {
        if e.is_money_movement() {
            g.money.insert(e.id.clone(), e.clone());
        }
    }
    if policy.export {
        let first = g.export_next;
        g.export_next += batch.entries.len() as u64;
        let queue = g.export.entry(batch.wallet_id).or_default();
        queue.extend((first..).zip(batch.entries));
        return;
    }
    for e in batch.entries {
        let wallet_id = match g.wallet_ids.get(e.wallet_id.as_str()) {
            Some(w) => w.clone(),
            None => {
                let w: Arc<str> = Arc::from(e.wallet_id.as_str());
                g.wallet_ids.insert(w.clone());
                w
            }
        };
        // Serialising a plain record cannot fail; were it to, the entry
        // is not kept (the money and counters above are applied).
        if let Ok(json) = pack(&e) {
            g.kept.push_back(Kept {
                wallet_id,
                at: e.at,
                json: json.into_boxed_slice(),
            });
        }
    }
    while g.kept.len() > policy.memory_entries {
        g.kept.pop_front();
    }
}

/// B10: the wallet's balance after the batch, its deltas summed in i128;
/// a part or the balance outside i64 refuses the batch before any write.
fn balance_after(g: &Inner, batch: &WalletBatch) -> StoreResult<WalletBalance> {
    let wide = |n: Nanos| i128::from(n.0);
    let (paid, promo) = batch.entries.iter().fold((0i128, 0i128), |(p, q), e| {
        (p + wide(e.paid), q + wide(e.promo))
    });
    let before = g.wallets.get(&batch.wallet_id).copied().unwrap_or_default();
    let refused = || {
        StoreError::OutOfRange(format!(
            "batch {} would take wallet {} outside i64 nano-dollars",
            batch.batch_id, batch.wallet_id
        ))
    };
    crate::money::credit_fits(before.paid, before.promo, paid, promo).map_err(|_| refused())?;
    let part = |b: Nanos, d: i128| i64::try_from(wide(b) + d).map(Nanos).map_err(|_| refused());
    Ok(WalletBalance {
        paid: part(before.paid, paid)?,
        promo: part(before.promo, promo)?,
    })
}

/// A kept entry's fields but its wallet and time, as a JSON array.
type Packed = (
    String,
    EntryKind,
    Nanos,
    Nanos,
    String,
    Option<(
        String,
        String,
        Option<String>,
        String,
        u64,
        u64,
        u64,
        RequestStatus,
    )>,
);

fn pack(e: &LedgerEntry) -> Result<Vec<u8>, serde_json::Error> {
    let usage = e.usage.as_ref().map(|u| {
        (
            &u.key_id,
            &u.member_id,
            &u.team_id,
            &u.model,
            u.usage.input_tokens,
            u.usage.cached_tokens,
            u.usage.output_tokens,
            u.status,
        )
    });
    serde_json::to_vec(&(&e.id, e.kind, e.paid, e.promo, &e.reference, usage))
}

fn unpack(k: &Kept) -> StoreResult<LedgerEntry> {
    let (id, kind, paid, promo, reference, usage): Packed = serde_json::from_slice(&k.json)
        .map_err(|e| StoreError::Corrupt(format!("kept ledger entry: {e}")))?;
    Ok(LedgerEntry {
        id,
        wallet_id: k.wallet_id.to_string(),
        kind,
        paid,
        promo,
        at: k.at,
        reference,
        usage: usage.map(
            |(key_id, member_id, team_id, model, input, cached, output, status)| UsageFacts {
                key_id,
                member_id,
                team_id,
                model,
                usage: crate::pricing::Usage {
                    input_tokens: input,
                    cached_tokens: cached,
                    output_tokens: output,
                },
                status,
            },
        ),
    })
}
