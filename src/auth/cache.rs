//! KeyCache: SHA-256(key) -> `Arc<KeyEntry>`, read on every proxied
//! request. A miss asks the store once and caches the answer; an unknown
//! key is remembered briefly (negative cache) so junk keys cannot hammer
//! the store.
//!
//! DashMap, not `RwLock<HashMap>`: read on every request; shard locks keep
//! readers apart and a lookup allocates nothing (counted: benches/alloc.rs).
//!
//! K5, no stale entry: code that changes a key's status calls
//! `invalidate`, which bumps an epoch and then removes the entry. A fill
//! inserts first and re-checks the epoch after, removing its own entry if
//! an invalidation overlapped it; in either order the stale entry is gone.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::AuthError;
use crate::ids::sha256;
use crate::limits::{Charge, KeyLimits};
use crate::store::{KeyRecord, KeyStatus, LimitSubject, Store, StoreError};
use crate::wallet::{WalletHandle, WalletRegistry};

/// What the proxy needs to know about a key, resolved once.
pub struct KeyEntry {
    pub key_id: Arc<str>,
    pub member_id: Arc<str>,
    pub team_id: Option<Arc<str>>,
    pub wallet: WalletHandle,
    /// Q1-Q3: the key's spend and rate limits and its member's spend
    /// limit, as stored when the entry was filled; a change of limits
    /// invalidates the entry (here and on every instance).
    pub limits: KeyLimits,
    status: AtomicU8,
}

impl KeyEntry {
    /// Q1: what a hold of this key is charged to.
    pub fn charge(&self) -> Charge {
        Charge {
            key_id: self.key_id.clone(),
            member_id: self.member_id.clone(),
            key_rule: self.limits.key_rule,
            member_rule: self.limits.member_rule,
        }
    }
}

impl KeyEntry {
    pub fn status(&self) -> KeyStatus {
        match self.status.load(Ordering::Acquire) {
            0 => KeyStatus::Active,
            1 => KeyStatus::Archived,
            _ => KeyStatus::Deleted,
        }
    }
}

fn status_code(s: KeyStatus) -> u8 {
    match s {
        KeyStatus::Active => 0,
        KeyStatus::Archived => 1,
        KeyStatus::Deleted => 2,
    }
}

/// Negative entries kept at most; past it the negative cache is cleared.
const NEGATIVE_CAP: usize = 100_000;

pub struct KeyCache {
    hits: DashMap<[u8; 32], Arc<KeyEntry>>,
    negative: DashMap<[u8; 32], Instant>,
    negative_ttl: Duration,
    epoch: AtomicU64,
}

impl KeyCache {
    pub fn new(negative_ttl: Duration) -> KeyCache {
        KeyCache {
            hits: DashMap::new(),
            negative: DashMap::new(),
            negative_ttl,
            epoch: AtomicU64::new(0),
        }
    }

    /// Resolve a presented key. Hit: no allocation, no await.
    pub async fn lookup(
        &self,
        key: &[u8],
        store: &dyn Store,
        wallets: &WalletRegistry,
    ) -> Result<Arc<KeyEntry>, AuthError> {
        let hash = sha256(key);
        if let Some(e) = self.cached(&hash) {
            return e;
        }
        self.fill(hash, store, wallets).await
    }

    /// The cache-only part of `lookup`: `None` on a miss.
    pub fn cached(&self, hash: &[u8; 32]) -> Option<Result<Arc<KeyEntry>, AuthError>> {
        if let Some(e) = self.hits.get(hash) {
            return Some(Ok(e.value().clone()));
        }
        if let Some(t) = self.negative.get(hash) {
            if t.elapsed() < self.negative_ttl {
                return Some(Err(AuthError::Unknown));
            }
        }
        None
    }

    async fn fill(
        &self,
        hash: [u8; 32],
        store: &dyn Store,
        wallets: &WalletRegistry,
    ) -> Result<Arc<KeyEntry>, AuthError> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let record = store
            .key_by_hash(&hex::encode(hash))
            .await
            .map_err(|_| AuthError::Unavailable)?;
        let Some(record) = record else {
            if self.negative.len() >= NEGATIVE_CAP {
                self.negative.clear();
            }
            self.negative.insert(hash, Instant::now());
            return Err(AuthError::Unknown);
        };
        let wallet = wallets
            .get(&record.wallet_id)
            .await
            .map_err(|_| AuthError::Unavailable)?;
        let limits = limits_of(store, &record)
            .await
            .map_err(|_| AuthError::Unavailable)?;
        let entry = Arc::new(entry_of(&record, wallet, limits));
        self.hits.insert(hash, entry.clone());
        if self.epoch.load(Ordering::Acquire) != epoch {
            self.hits
                .remove_if(&hash, |_, cached| Arc::ptr_eq(cached, &entry));
        }
        Ok(entry)
    }

    /// K5: a key's status or wallet changed; the next request re-reads it.
    pub fn invalidate(&self, hash_hex: &str) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let mut hash = [0u8; 32];
        if hex::decode_to_slice(hash_hex, &mut hash).is_ok() {
            self.hits.remove(&hash);
            self.negative.remove(&hash);
        }
    }

    /// A key's record changed in the store: forget it here, and tell the
    /// other instances (K5 across instances, through the store's pub/sub).
    pub async fn changed(&self, store: &dyn Store, hash_hex: &str) {
        self.invalidate(hash_hex);
        if let Err(e) = store
            .publish(&crate::store::Change::Key(hash_hex.to_string()))
            .await
        {
            tracing::warn!(error = %e, "key change not published to other instances");
        }
    }

    pub fn len(&self) -> usize {
        self.hits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hits.is_empty()
    }
}

/// The stored limits of a key and, for a team key, of its member.
async fn limits_of(store: &dyn Store, r: &KeyRecord) -> Result<KeyLimits, StoreError> {
    let key = store.limits(&LimitSubject::Key(r.id.clone())).await?;
    let member = match &r.team_id {
        Some(team_id) => {
            store
                .limits(&LimitSubject::Member {
                    team_id: team_id.clone(),
                    user_id: r.member_id.clone(),
                })
                .await?
        }
        None => None,
    };
    Ok(KeyLimits::new(key.as_ref(), member.as_ref()))
}

fn entry_of(r: &KeyRecord, wallet: WalletHandle, limits: KeyLimits) -> KeyEntry {
    KeyEntry {
        limits,
        key_id: Arc::from(r.id.as_str()),
        member_id: Arc::from(r.member_id.as_str()),
        team_id: r.team_id.as_deref().map(Arc::from),
        wallet,
        status: AtomicU8::new(status_code(r.status)),
    }
}
