//! The embedded memory store: everything in this process, for a first run,
//! the demo and fast tests. Nothing survives a restart, and start-up says
//! so loudly.
//!
//! One `std::sync::Mutex` over all maps, never held across an `.await`:
//! the store is off the hot path (key-cache misses, flushes, management
//! calls), and one lock makes every batch trivially atomic.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::NaiveDate;

use super::*;

#[derive(Default)]
struct Inner {
    users: HashMap<String, UserRecord>,
    users_by_email: HashMap<String, String>,
    sessions: HashMap<String, SessionRecord>,
    keys: HashMap<String, KeyRecord>,
    keys_by_hash: HashMap<String, String>,
    wallets: HashMap<String, WalletBalance>,
    ledger: HashMap<String, Vec<LedgerEntry>>,
    entry_ids: HashSet<String>,
    batches: HashSet<String>,
    key_usage: HashMap<String, BTreeMap<NaiveDate, DayUsage>>,
    idempotency: HashMap<String, IdempotencyRecord>,
    totals: MoneyTotals,
}

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied batch
        // (batches are checked before they are written), so keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

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

    async fn wallet(&self, wallet_id: &str) -> StoreResult<WalletBalance> {
        Ok(self
            .lock()
            .wallets
            .get(wallet_id)
            .copied()
            .unwrap_or_default())
    }

    async fn apply(&self, batch: &WalletBatch) -> StoreResult<Applied> {
        let mut g = self.lock();
        if g.batches.contains(&batch.batch_id) {
            return Ok(Applied::Before);
        }
        // Check everything before the first write: a batch applies whole.
        for e in &batch.entries {
            if e.wallet_id != batch.wallet_id {
                return Err(StoreError::Corrupt(format!(
                    "entry {} is for wallet {}, batch for {}",
                    e.id, e.wallet_id, batch.wallet_id
                )));
            }
            if g.entry_ids.contains(&e.id) {
                return Err(StoreError::Corrupt(format!("entry {} applied twice", e.id)));
            }
        }
        let g = &mut *g;
        g.batches.insert(batch.batch_id.clone());
        let wallet = g.wallets.entry(batch.wallet_id.clone()).or_default();
        for e in &batch.entries {
            wallet.paid += e.paid;
            wallet.promo += e.promo;
            g.totals.balances += e.amount();
            match e.kind {
                EntryKind::Deposit => g.totals.deposits += e.amount(),
                EntryKind::Settlement => g.totals.usage -= e.amount(),
                EntryKind::TransferIn | EntryKind::TransferOut => {}
            }
            if let Some(u) = &e.usage {
                if let Some(k) = g.keys.get_mut(&u.key_id) {
                    k.last_used_at = k.last_used_at.max(Some(e.at));
                }
                g.key_usage
                    .entry(u.key_id.clone())
                    .or_default()
                    .entry(e.at.date_naive())
                    .or_default()
                    .add(&u.usage, Nanos::ZERO - e.amount());
            }
            g.entry_ids.insert(e.id.clone());
        }
        g.ledger
            .entry(batch.wallet_id.clone())
            .or_default()
            .extend(batch.entries.iter().cloned());
        Ok(Applied::Now)
    }

    async fn ledger(&self, wallet_id: &str) -> StoreResult<Vec<LedgerEntry>> {
        Ok(self
            .lock()
            .ledger
            .get(wallet_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn money_totals(&self) -> StoreResult<MoneyTotals> {
        Ok(self.lock().totals)
    }

    async fn key_usage(
        &self,
        key_id: &str,
        from: NaiveDate,
    ) -> StoreResult<Vec<(NaiveDate, DayUsage)>> {
        Ok(self
            .lock()
            .key_usage
            .get(key_id)
            .map(|days| days.range(from..).map(|(d, u)| (*d, *u)).collect())
            .unwrap_or_default())
    }

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
