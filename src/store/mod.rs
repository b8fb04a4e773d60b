//! Store: where records and money live between restarts. One trait per
//! concern (users and sessions, keys, the ledger, usage buckets, teams,
//! the outbox and events, transfers, idempotency, the change feed), joined
//! by the `Store` supertrait that every type implementing them all gets
//! for free, so callers hold one `Arc<dyn Store>`. Two implementations
//! (`memory` here; Redis in `redis_store`) are held to one contract suite
//! (`tests/store_contract.rs`). The record types live in `records`.
//!
//! Money enters the store only as `WalletBatch`es: signed deltas plus the
//! ledger entries that explain them, applied atomically and at most once
//! per batch id. Deltas, never absolute balances, so two writers (a flush
//! and a deposit, or two gateway instances) cannot overwrite each other.
//!
//! Calling a method on `dyn Store` needs no import beyond `Store`; calling
//! one on a concrete store (or a generic) needs its concern's trait in
//! scope: `use crate::store::prelude::*;`.

pub mod export;
pub mod limits;
pub mod memory;
pub mod records;
pub mod redis_store;
pub mod webhooks;

use async_trait::async_trait;
use chrono::NaiveDate;

pub use export::{ExportSignal, ExportStore, Exported, LedgerPolicy};
pub use limits::{LimitStore, LimitSubject, LimitsRecord, Period};
pub use records::*;
pub use webhooks::{Attempt, DeliveryRecord, DeliveryStatus, WebhookRecord, WebhookStore};

/// Every store trait, for callers that use a concrete store or a generic.
pub mod prelude {
    pub use super::{
        ChangeFeed, EventStore, ExportStore, IdempotencyStore, KeyStore, LedgerStore, LimitStore,
        Store, StoreInfo, TeamStore, TransferStore, UsageStore, UserStore, WebhookStore,
    };
}

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
    /// B10: the batch would take a balance or counter outside i64;
    /// refused before its first write (nothing of it applied).
    #[error("amount out of range: {0}")]
    OutOfRange(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Every concern at once: what the rest of the gateway holds.
pub trait Store:
    StoreInfo
    + UserStore
    + KeyStore
    + LedgerStore
    + UsageStore
    + TeamStore
    + EventStore
    + TransferStore
    + ChangeFeed
    + IdempotencyStore
    + ExportStore
    + LimitStore
    + WebhookStore
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: StoreInfo
        + UserStore
        + KeyStore
        + LedgerStore
        + UsageStore
        + TeamStore
        + EventStore
        + TransferStore
        + ChangeFeed
        + IdempotencyStore
        + ExportStore
        + LimitStore
        + WebhookStore
        + Send
        + Sync
        + 'static
{
}

/// Which store this is and whether it answers.
#[async_trait]
pub trait StoreInfo: Send + Sync {
    /// A short name for logs and `/readyz`.
    fn kind(&self) -> &'static str;
    async fn ping(&self) -> StoreResult<()>;
}

/// Users and sessions (A1).
#[async_trait]
pub trait UserStore: Send + Sync {
    async fn create_user(&self, user: &UserRecord) -> StoreResult<()>;
    async fn user_by_email(&self, email_norm: &str) -> StoreResult<Option<UserRecord>>;
    async fn user(&self, id: &str) -> StoreResult<Option<UserRecord>>;
    async fn put_session(&self, s: &SessionRecord) -> StoreResult<()>;
    async fn session(&self, token_hash: &str) -> StoreResult<Option<SessionRecord>>;
}

/// Keys (K1-K5), personal and team.
#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn put_key(&self, key: &KeyRecord) -> StoreResult<()>;
    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<KeyRecord>>;
    async fn key(&self, id: &str) -> StoreResult<Option<KeyRecord>>;
    async fn keys_of_user(&self, user_id: &str) -> StoreResult<Vec<KeyRecord>>;
    async fn set_key_status(&self, id: &str, status: KeyStatus) -> StoreResult<()>;
    async fn team_keys(&self, team_id: &str) -> StoreResult<Vec<KeyRecord>>;
}

/// Wallets and the ledger (B1-B9).
#[async_trait]
pub trait LedgerStore: Send + Sync {
    async fn wallet(&self, wallet_id: &str) -> StoreResult<WalletBalance>;
    /// Apply a batch atomically, at most once per batch id; returns whether
    /// it applied now and the wallet's stored balance after it (which
    /// includes other instances' changes).
    async fn apply(&self, batch: &WalletBatch) -> StoreResult<(Applied, WalletBalance)>;
    async fn ledger(&self, wallet_id: &str) -> StoreResult<Vec<LedgerEntry>>;
    async fn money_totals(&self) -> StoreResult<MoneyTotals>;

    /// One entry by id, if applied (transfer recovery).
    async fn ledger_entry(
        &self,
        wallet_id: &str,
        entry_id: &str,
    ) -> StoreResult<Option<LedgerEntry>>;
}

/// Usage day buckets, written by `apply` from settlement entries, in the
/// same atomic step as the debit (U1).
#[async_trait]
pub trait UsageStore: Send + Sync {
    async fn usage_rows(&self, wallet_id: &str, from: NaiveDate) -> StoreResult<Vec<UsageRow>>;
    /// Drop buckets older than `before` (90-day retention).
    async fn prune_usage(&self, before: NaiveDate) -> StoreResult<()>;
}

/// Teams (T1-T4), members, invites (I1-I5).
#[async_trait]
pub trait TeamStore: Send + Sync {
    async fn put_team(&self, team: &TeamRecord) -> StoreResult<()>;
    async fn team(&self, id: &str) -> StoreResult<Option<TeamRecord>>;
    /// The live (not deleted) team this user owns (T1).
    async fn owned_team(&self, user_id: &str) -> StoreResult<Option<TeamRecord>>;
    async fn put_member(&self, m: &MemberRecord) -> StoreResult<()>;
    async fn member(&self, team_id: &str, user_id: &str) -> StoreResult<Option<MemberRecord>>;
    /// Every row, departed members included.
    async fn members(&self, team_id: &str) -> StoreResult<Vec<MemberRecord>>;
    /// Active memberships of a user.
    async fn memberships(&self, user_id: &str) -> StoreResult<Vec<MemberRecord>>;
    async fn put_invite(&self, inv: &InviteRecord) -> StoreResult<()>;
    async fn invite(&self, id: &str) -> StoreResult<Option<InviteRecord>>;
    async fn invite_by_token(&self, token_hash: &str) -> StoreResult<Option<InviteRecord>>;
    async fn invites(&self, team_id: &str) -> StoreResult<Vec<InviteRecord>>;
}

/// The outbox (I3) and the event log.
#[async_trait]
pub trait EventStore: Send + Sync {
    async fn put_outbox(&self, m: &OutboxMessage) -> StoreResult<()>;
    async fn outbox(&self) -> StoreResult<Vec<OutboxMessage>>;
    async fn append_event(&self, e: &EventRecord) -> StoreResult<()>;
    async fn events(&self, team_id: &str) -> StoreResult<Vec<EventRecord>>;
    /// Notified after this process appends an event, so the webhook worker
    /// fans it out at once instead of at its next poll.
    fn events_appended(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }
}

/// Transfers between wallets (DESIGN "Money between wallets").
#[async_trait]
pub trait TransferStore: Send + Sync {
    async fn put_transfer(&self, t: &TransferRecord) -> StoreResult<()>;
    async fn finish_transfer(&self, id: &str) -> StoreResult<()>;
    async fn unfinished_transfers(&self) -> StoreResult<Vec<TransferRecord>>;
}

/// Several gateway instances on one store (DESIGN "Scale-out").
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// Tell the other instances that something they may cache changed.
    async fn publish(&self, _change: &Change) -> StoreResult<()> {
        Ok(())
    }
    /// Changes published by other instances; `None` for a store that only
    /// one process uses (memory).
    fn subscribe(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Change>> {
        None
    }
}

/// Idempotency records (B7).
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    async fn idempotency(&self, scope_key: &str) -> StoreResult<Option<IdempotencyRecord>>;
    async fn put_idempotency(&self, scope_key: &str, rec: &IdempotencyRecord) -> StoreResult<()>;
}
