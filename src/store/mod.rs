//! Store: where records and money live between restarts. One narrow
//! `Store` trait, two implementations (`memory` here; Redis in its own
//! module) held to one contract suite (`tests/store_contract.rs`).
//!
//! Money enters the store only as `WalletBatch`es: signed deltas plus the
//! ledger entries that explain them, applied atomically and at most once
//! per batch id. Deltas, never absolute balances, so two writers (a flush
//! and a deposit, or two gateway instances) cannot overwrite each other.

pub mod memory;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::money::Nanos;
use crate::pricing::Usage;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached; the caller answers 503 and retries later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule was hit (an email, a key hash).
    #[error("already exists: {0}")]
    Conflict(&'static str),
    #[error("not found")]
    NotFound,
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    /// As typed at sign-up.
    pub email: String,
    /// Lower-cased: the unique, case-insensitive identity (A1).
    pub email_norm: String,
    /// Argon2id PHC string; never the password.
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionRecord {
    /// Hex SHA-256 of the session token; the token itself is never stored.
    pub token_hash: String,
    pub user_id: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Archived,
    Deleted,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum KeyScope {
    Personal,
    Team,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: String,
    /// Hex SHA-256 of the full key (K1).
    pub hash: String,
    /// The first characters of the key, for people to recognise it.
    pub prefix: String,
    pub name: String,
    pub scope: KeyScope,
    /// Personal: the owner. Team: the team key's creator.
    pub created_by: String,
    pub team_id: Option<String>,
    /// Whose usage the key counts as (personal: the owner).
    pub member_id: String,
    pub wallet_id: String,
    pub status: KeyStatus,
    pub created_at: DateTime<Utc>,
    /// Set by `apply` from the settlements that name this key.
    #[serde(default)]
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Which part of a wallet an amount belongs to (B1, T3).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Paid,
    Promo,
}

/// A wallet's persisted balance.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WalletBalance {
    pub paid: Nanos,
    pub promo: Nanos,
}

impl WalletBalance {
    pub fn total(&self) -> Nanos {
        self.paid + self.promo
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Money from outside (B7): stripe, crypto or promo.
    Deposit,
    /// A proxied request's cost (negative).
    Settlement,
    /// Money into this wallet from another (create, join, deletion payout).
    TransferIn,
    /// Money out of this wallet to another.
    TransferOut,
}

/// What a settlement was for; the usage counters are built from these, in
/// the same batch as the debit, so usage spend always equals the ledger.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsageFacts {
    pub key_id: String,
    pub member_id: String,
    pub team_id: Option<String>,
    pub model: String,
    #[serde(flatten)]
    pub usage: Usage,
}

/// One money movement (B9). `paid` and `promo` are signed deltas.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Unique across the whole ledger; a replay with the same id is a no-op.
    pub id: String,
    pub wallet_id: String,
    pub kind: EntryKind,
    pub paid: Nanos,
    pub promo: Nanos,
    pub at: DateTime<Utc>,
    /// Deposit reference, request id or transfer id.
    pub reference: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageFacts>,
}

impl LedgerEntry {
    pub fn amount(&self) -> Nanos {
        self.paid + self.promo
    }
}

/// Entries of one wallet, applied together and at most once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletBatch {
    pub batch_id: String,
    pub wallet_id: String,
    pub entries: Vec<LedgerEntry>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Now,
    /// This batch id was applied before; nothing changed.
    Before,
}

/// A stored answer to an idempotent call (B7).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub request_hash: String,
    pub status: u16,
    pub response: String,
}

/// One day's usage of one key (UTC).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DayUsage {
    pub calls: u64,
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
    pub spend: Nanos,
}

impl DayUsage {
    pub fn add(&mut self, u: &Usage, cost: Nanos) {
        self.calls += 1;
        self.input_tokens += u.input_tokens;
        self.cached_tokens += u.cached_tokens;
        self.output_tokens += u.output_tokens;
        self.spend += cost;
    }

    pub fn merge(&mut self, o: &DayUsage) {
        self.calls += o.calls;
        self.input_tokens += o.input_tokens;
        self.cached_tokens += o.cached_tokens;
        self.output_tokens += o.output_tokens;
        self.spend += o.spend;
    }
}

/// Totals for the reconciliation report (B8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MoneyTotals {
    pub deposits: Nanos,
    pub usage: Nanos,
    pub balances: Nanos,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and `/readyz`.
    fn kind(&self) -> &'static str;
    async fn ping(&self) -> StoreResult<()>;

    // Users and sessions (A1).
    async fn create_user(&self, user: &UserRecord) -> StoreResult<()>;
    async fn user_by_email(&self, email_norm: &str) -> StoreResult<Option<UserRecord>>;
    async fn user(&self, id: &str) -> StoreResult<Option<UserRecord>>;
    async fn put_session(&self, s: &SessionRecord) -> StoreResult<()>;
    async fn session(&self, token_hash: &str) -> StoreResult<Option<SessionRecord>>;

    // Keys (K1-K5).
    async fn put_key(&self, key: &KeyRecord) -> StoreResult<()>;
    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<KeyRecord>>;
    async fn key(&self, id: &str) -> StoreResult<Option<KeyRecord>>;
    async fn keys_of_user(&self, user_id: &str) -> StoreResult<Vec<KeyRecord>>;
    async fn set_key_status(&self, id: &str, status: KeyStatus) -> StoreResult<()>;

    // Wallets and the ledger (B1-B9).
    async fn wallet(&self, wallet_id: &str) -> StoreResult<WalletBalance>;
    async fn apply(&self, batch: &WalletBatch) -> StoreResult<Applied>;
    async fn ledger(&self, wallet_id: &str) -> StoreResult<Vec<LedgerEntry>>;
    async fn money_totals(&self) -> StoreResult<MoneyTotals>;

    // Usage day buckets, written by `apply` from settlement entries (U1).
    async fn key_usage(
        &self,
        key_id: &str,
        from: NaiveDate,
    ) -> StoreResult<Vec<(NaiveDate, DayUsage)>>;

    // Idempotency records (B7).
    async fn idempotency(&self, scope_key: &str) -> StoreResult<Option<IdempotencyRecord>>;
    async fn put_idempotency(&self, scope_key: &str, rec: &IdempotencyRecord) -> StoreResult<()>;
}
