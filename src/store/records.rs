//! The record types the store keeps: users, sessions, keys, wallets and
//! their ledger entries, usage buckets, teams, members, invites, the outbox,
//! events, transfers and idempotency answers. Plain data with serde names
//! (the Redis store writes them as JSON), apart from the traits in
//! `store/mod.rs` so both stores and every caller share one definition.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::money::{Nanos, WideNanos};
use crate::pricing::Usage;

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
    /// How the request ended (U1); entries written before it existed read
    /// as `completed`.
    #[serde(default)]
    pub status: RequestStatus,
}

/// How a billed request ended (U1, U4, M9).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    /// The answer reached the client whole.
    #[default]
    Completed,
    /// The client left a stream early; billed for what was produced (U4a).
    Cancelled,
    /// The client left before a non-streamed answer ended; it was read to
    /// its end and billed by its usage (M9).
    ClientClosed,
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

    /// Deposits and transfers: money that enters or leaves a wallet by an
    /// account action, kept by id for good (they grow with accounts, not
    /// with requests) so a replay is recognised however late it comes.
    pub fn is_money_movement(&self) -> bool {
        self.kind != EntryKind::Settlement
    }
}

/// Entries of one wallet, applied together and at most once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletBatch {
    pub batch_id: String,
    pub wallet_id: String,
    pub entries: Vec<LedgerEntry>,
    /// Set by a writer that sends a wallet's batches one at a time in
    /// rising order (a wallet actor's flushes): the store then keeps one
    /// high-water mark per (wallet, writer) instead of every batch id, so
    /// what it remembers does not grow with traffic (G1). `None`: the batch
    /// id itself is remembered for `batch_id_ttl_s`.
    pub seq: Option<BatchSeq>,
}

/// A writer's place in its own sequence of batches for one wallet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSeq {
    /// Unique per writer (a gateway process's random nonce).
    pub writer: u64,
    /// Rises with every new batch of this writer; a retry keeps its number.
    pub seq: u64,
}

impl WalletBatch {
    /// One entry alone, under its own id as the batch id: deposits and
    /// transfers, which must apply at most once per entry.
    pub fn single(entry: &LedgerEntry) -> WalletBatch {
        WalletBatch {
            batch_id: entry.id.clone(),
            wallet_id: entry.wallet_id.clone(),
            entries: vec![entry.clone()],
            seq: None,
        }
    }
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

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Member,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TeamRecord {
    pub id: String,
    pub name: String,
    pub owner_id: String,
    pub created_at: DateTime<Utc>,
    /// Set by deletion (D1); a deleted team is gone for everyone but its
    /// ledger and usage history.
    #[serde(default)]
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A membership. Rows of members who left stay, with `left_at`, so their
/// usage stays attributed (U2).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberRecord {
    pub team_id: String,
    pub user_id: String,
    pub role: Role,
    pub joined_at: DateTime<Utc>,
    #[serde(default)]
    pub left_at: Option<DateTime<Utc>>,
}

impl MemberRecord {
    pub fn active(&self) -> bool {
        self.left_at.is_none()
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InviteStatus {
    Pending,
    Accepted,
    Revoked,
    /// A newer invite to the same email replaced it (I2).
    Replaced,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InviteRecord {
    pub id: String,
    pub team_id: String,
    /// As typed by the inviter.
    pub email: String,
    pub email_norm: String,
    pub role: Role,
    /// Hex SHA-256 of the single-use token (I2).
    pub token_hash: String,
    pub invited_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub status: InviteStatus,
}

/// An email waiting for (or past) delivery by the mailer (I3).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutboxMessage {
    pub id: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    /// The invite's accept link: the mail itself. Readable by the operator
    /// only; the token in it dies with the invite.
    pub link: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Something that happened to a team, for the owner and for notifications.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EventRecord {
    pub id: String,
    pub team_id: String,
    /// `team.suspended`, `member.joined`, `key.created`, ...
    pub kind: String,
    pub at: DateTime<Utc>,
    pub data: serde_json::Value,
}

/// What a transfer between wallets is for; re-applied on recovery, so each
/// step is idempotent.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TransferOp {
    /// T3: the creator's paid balance moves to their new team.
    CreateTeam { team: TeamRecord },
    /// I5: the joiner's paid balance moves to the team.
    Join {
        team_id: String,
        user_id: String,
        role: Role,
        invite_id: String,
    },
    /// D1: the team's whole balance moves to the owner.
    DeleteTeam { team_id: String, owner_id: String },
}

/// A money move between two wallets, written before its first half so a
/// crash between the halves is finished on recovery, never doubled.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TransferRecord {
    pub id: String,
    pub from_wallet: String,
    pub to_wallet: String,
    pub op: TransferOp,
    pub created_at: DateTime<Utc>,
}

/// One day's usage of one key by one member on one wallet (UTC day).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsageRow {
    pub wallet_id: String,
    pub key_id: String,
    pub member_id: String,
    pub date: NaiveDate,
    #[serde(flatten)]
    pub usage: DayUsage,
}

/// A change other gateway instances must hear about (K5, B3).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", content = "id", rename_all = "lowercase")]
pub enum Change {
    /// A key's status or wallet changed: drop it from the key cache.
    Key(String),
    /// A wallet's stored balance changed outside this instance: re-read it.
    Wallet(String),
    /// N2: a wallet's low-balance thresholds changed: re-read them.
    Alerts(String),
}

/// Totals for the reconciliation report (B8), in i128 (B10): every
/// balance fits an i64, their sum over all wallets need not, and a total
/// is never clipped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MoneyTotals {
    pub deposits: WideNanos,
    pub usage: WideNanos,
    pub balances: WideNanos,
}
