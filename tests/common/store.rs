//! Fixtures shared by the store tests (`store_contract.rs`, run against
//! both stores, and `store_redis.rs`, Redis only): records with fixed,
//! exact instants, and a fresh `RedisStore` on a private `redis-server`.
#![allow(dead_code)]

#[path = "redis.rs"]
pub mod redis_harness;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use redis_harness::RedisServer;
use tollgate::money::Nanos;
use tollgate::pricing::Usage;
use tollgate::store::redis_store::RedisStore;
use tollgate::store::*;

/// The key prefix of every Redis store under test.
pub const PREFIX: &str = "tg-test:";

/// A fixed instant with sub-microsecond digits, so round trips must be exact.
pub fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, 0, 0).unwrap()
        + chrono::Duration::nanoseconds(123_456_789)
}

pub fn date(day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, day).unwrap()
}

pub fn usd(d: i64) -> Nanos {
    Nanos(d * 1_000_000_000)
}

pub fn user(id: &str, email: &str) -> UserRecord {
    UserRecord {
        id: id.into(),
        email: email.into(),
        email_norm: email.to_lowercase(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        created_at: at(1, 9),
    }
}

pub fn key(id: &str, user: &str, team: Option<&str>, created: DateTime<Utc>) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        hash: format!("hash-of-{id}"),
        prefix: "tg_abc".into(),
        name: format!("key {id}"),
        scope: if team.is_some() {
            KeyScope::Team
        } else {
            KeyScope::Personal
        },
        created_by: user.into(),
        team_id: team.map(str::to_string),
        member_id: user.into(),
        wallet_id: match team {
            Some(t) => format!("team:{t}"),
            None => format!("user:{user}"),
        },
        status: KeyStatus::Active,
        created_at: created,
        last_used_at: None,
    }
}

pub fn deposit(id: &str, wallet: &str, paid: Nanos, promo: Nanos) -> LedgerEntry {
    LedgerEntry {
        id: id.into(),
        wallet_id: wallet.into(),
        kind: EntryKind::Deposit,
        paid,
        promo,
        at: at(1, 10),
        reference: format!("ref-{id}"),
        usage: None,
    }
}

pub fn settlement(
    id: &str,
    wallet: &str,
    key_id: &str,
    member: &str,
    cost: Nanos,
    when: DateTime<Utc>,
) -> LedgerEntry {
    LedgerEntry {
        id: id.into(),
        wallet_id: wallet.into(),
        kind: EntryKind::Settlement,
        paid: Nanos::ZERO - cost,
        promo: Nanos::ZERO,
        at: when,
        reference: format!("req-{id}"),
        usage: Some(UsageFacts {
            key_id: key_id.into(),
            member_id: member.into(),
            team_id: None,
            model: "gpt-4o-mini".into(),
            status: Default::default(),
            usage: Usage {
                input_tokens: 100,
                cached_tokens: 20,
                output_tokens: 50,
            },
        }),
    }
}

pub fn batch(id: &str, wallet: &str, entries: Vec<LedgerEntry>) -> WalletBatch {
    WalletBatch {
        batch_id: id.into(),
        wallet_id: wallet.into(),
        entries,
        seq: None,
    }
}

pub fn team(id: &str, owner: &str, created: DateTime<Utc>) -> TeamRecord {
    TeamRecord {
        id: id.into(),
        name: format!("team {id}"),
        owner_id: owner.into(),
        created_at: created,
        deleted_at: None,
    }
}

pub fn member(team: &str, user: &str, role: Role, joined: DateTime<Utc>) -> MemberRecord {
    MemberRecord {
        team_id: team.into(),
        user_id: user.into(),
        role,
        joined_at: joined,
        left_at: None,
    }
}

pub fn invite(id: &str, team: &str, created: DateTime<Utc>) -> InviteRecord {
    InviteRecord {
        id: id.into(),
        team_id: team.into(),
        email: format!("{id}@Example.com"),
        email_norm: format!("{id}@example.com"),
        role: Role::Member,
        token_hash: format!("token-of-{id}"),
        invited_by: "usr_owner".into(),
        created_at: created,
        expires_at: created + chrono::Duration::days(7),
        status: InviteStatus::Pending,
    }
}

/// A fresh redis-server and a store on it, or `None` (loudly) where there
/// is no redis-server to start.
pub async fn redis_store(test: &str) -> Option<(RedisServer, RedisStore)> {
    let server = RedisServer::start(test)?;
    let store = RedisStore::connect(&server.url(), PREFIX).await.unwrap();
    Some((server, store))
}
