//! Shared bench fixtures: a gateway `App` on the memory store with one
//! funded wallet and one active key, built through the public API only.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tollgate::auth::NewKey;
use tollgate::billing::{deposit, DepositKind};
use tollgate::config::Config;
use tollgate::money::Nanos;
use tollgate::pricing::{Pricing, Usage};
use tollgate::store::memory::MemoryStore;
use tollgate::store::{KeyRecord, KeyScope, KeyStatus, Store, UsageFacts};
use tollgate::wallet::WalletHandle;
use tollgate::App;

pub const PRICING: &str = include_str!("../../config/pricing.toml");
pub const CHAT_JSON: &[u8] = include_bytes!("../../tests/fixtures/openai/chat_completion.json");
pub const CHAT_SSE: &[u8] =
    include_bytes!("../../tests/fixtures/openai/chat_completion_stream_with_usage.sse");

/// `CHAT_SSE` as the upstream sends it: one event (its line and the blank
/// line after it) per chunk.
pub fn chat_sse_events() -> Vec<bytes::Bytes> {
    CHAT_SSE
        .split_inclusive(|&b| b == b'\n')
        .collect::<Vec<_>>()
        .chunks(2)
        .map(|c| bytes::Bytes::from(c.concat()))
        .collect()
}

pub fn pricing() -> Pricing {
    Pricing::parse(PRICING, "config/pricing.toml").expect("config/pricing.toml parses")
}

/// The usage the pricing benches price: a chat whose 1219 prompt tokens
/// are 1024 cached, with 10 out.
pub fn cached_chat_usage() -> Usage {
    Usage {
        input_tokens: 1219,
        cached_tokens: 1024,
        output_tokens: 10,
    }
}

/// What a settlement records for the bench key and member.
pub fn facts(usage: Usage) -> UsageFacts {
    UsageFacts {
        key_id: "key_bench00000000".into(),
        member_id: "usr_bench".into(),
        team_id: None,
        model: "gpt-4o-mini".into(),
        status: Default::default(),
        usage,
    }
}

/// A runtime shaped like the server's on this machine: the multi-thread
/// scheduler with one worker per core.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

pub fn config() -> Config {
    Config {
        // Long enough that a negative entry outlives a criterion measurement.
        negative_cache_ttl: Duration::from_secs(3600),
        ..Config::default()
    }
}

/// An `App` on a fresh memory store (the same constructor the server uses,
/// so the benches follow whatever `App::new` wires up).
pub fn app(config: Config) -> (Arc<App>, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let app = Arc::new(App::new(config, store.clone(), pricing()));
    (app, store)
}

/// Start `wallet_id` and credit it a billion dollars.
pub async fn funded_wallet(app: &App, wallet_id: &str) -> WalletHandle {
    let w = app.wallets.get(wallet_id).await.expect("wallet starts");
    deposit(
        &w,
        Nanos(1_000_000_000 * 1_000_000_000),
        DepositKind::Stripe,
        "bench",
        &format!("bench-deposit-{wallet_id}"),
    )
    .await
    .expect("deposit");
    w
}

/// A key record for `wallet_id`, as `accounts` would write it.
pub fn key_record(n: usize, key: &NewKey, wallet_id: &str) -> KeyRecord {
    KeyRecord {
        id: format!("key_bench{n:08}"),
        hash: key.hash_hex.clone(),
        prefix: key.prefix.clone(),
        name: "bench".into(),
        scope: KeyScope::Personal,
        created_by: "usr_bench".into(),
        team_id: None,
        member_id: "usr_bench".into(),
        wallet_id: wallet_id.to_string(),
        status: KeyStatus::Active,
        created_at: chrono::Utc::now(),
        last_used_at: None,
    }
}

/// Mint a key on `wallet_id` and store it.
pub async fn stored_key(store: &dyn Store, n: usize, wallet_id: &str) -> NewKey {
    let key = tollgate::auth::mint_key();
    store
        .put_key(&key_record(n, &key, wallet_id))
        .await
        .expect("put_key");
    key
}
