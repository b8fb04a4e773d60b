//! `tollgate demo`: the whole product on one machine in one command. The
//! memory store, the mock upstream in process, a seeded user with credit
//! and a key; prints the key and a ready curl command.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::billing::{self, DepositKind};
use crate::config::{Config, Secret, StoreConfig};
use crate::ids;
use crate::mock_upstream::MockUpstream;
use crate::money::Nanos;
use crate::pricing::Pricing;
use crate::server::{start, Running, ServeError};
use crate::store::memory::MemoryStore;
use crate::wallet::user_wallet_id;

/// The pricing shipped in config/pricing.toml, for runs outside the repo.
pub const DEFAULT_PRICING: &str = include_str!("../config/pricing.toml");

pub const DEMO_EMAIL: &str = "demo@tollgate.local";
pub const DEMO_PASSWORD: &str = "demo-password";

/// The configured pricing file, or the built-in one if it is absent.
pub fn pricing_or_default(config: &Config) -> Result<Pricing, ServeError> {
    if config.pricing.exists() {
        Pricing::load(&config.pricing).map_err(|e| ServeError::Config(e.to_string()))
    } else {
        Pricing::parse(DEFAULT_PRICING, "built-in pricing")
            .map_err(|e| ServeError::Config(e.to_string()))
    }
}

/// What the demo seeded, for printing (and for tests of the demo).
pub struct Seeded {
    pub api_key: String,
    pub operator_token: String,
}

/// Start the mock upstream and the gateway, seed a user; returns once
/// everything is serving.
pub async fn launch(mut config: Config) -> Result<(Running, Seeded), ServeError> {
    let mock = MockUpstream::new();
    let mock_listener = TcpListener::bind("127.0.0.1:0").await?;
    config.upstream_url = format!("http://{}", mock_listener.local_addr()?);
    tokio::spawn(mock.serve(mock_listener, std::future::pending()));
    config.store = StoreConfig::Memory;
    let operator_token = match &config.operator_token {
        Some(t) => t.0.clone(),
        None => {
            let t = ids::new_secret("tgop_");
            config.operator_token = Some(Secret(t.clone()));
            t
        }
    };
    let pricing = pricing_or_default(&config)?;
    let running = start(config, Arc::new(MemoryStore::new()), pricing).await?;
    let app = &running.app;
    let seed = |e: String| ServeError::Config(format!("seeding the demo failed: {e}"));
    let user = app
        .accounts
        .sign_up(DEMO_EMAIL, DEMO_PASSWORD)
        .await
        .map_err(|e| seed(e.to_string()))?;
    let wallet = app
        .wallets
        .get(&user_wallet_id(&user.id))
        .await
        .map_err(|e| seed(e.to_string()))?;
    for (amount, kind, name) in [
        (Nanos(10_000_000_000), DepositKind::Stripe, "demo-paid"),
        (Nanos(1_000_000_000), DepositKind::Promo, "demo-promo"),
    ] {
        billing::deposit(&wallet, amount, kind, name, name)
            .await
            .map_err(|e| seed(e.to_string()))?;
    }
    let (_, key) = app
        .accounts
        .create_personal_key(&user, "demo", false, &app.keys)
        .await
        .map_err(|e| seed(e.to_string()))?;
    Ok((
        running,
        Seeded {
            api_key: key.secret,
            operator_token,
        },
    ))
}

/// Run the demo until Ctrl-C.
pub async fn run(config: Config) -> Result<(), ServeError> {
    let (running, seeded) = launch(config).await?;
    let url = running.url();
    println!(
        "\ntollgate demo: memory store (nothing survives exit), mock upstream in process\n\
         \n  gateway    {url}\
         \n  metrics    http://{metrics}/metrics\
         \n  user       {DEMO_EMAIL} / {DEMO_PASSWORD}  ($10.00 paid + $1.00 promo)\
         \n  API key    {key}\
         \n  operator   {op}\
         \n\nTry it:\n\n  curl -s {url}/v1/chat/completions \\\n    -H 'Authorization: Bearer {key}' \\\n    -H 'Content-Type: application/json' \\\n    -d '{{\"model\": \"gpt-4o-mini\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}]}}'\n\
         \nThen watch the balance move:\n\n  TOKEN=$(curl -s {url}/api/sessions -H 'Content-Type: application/json' \\\n    -d '{{\"email\": \"{DEMO_EMAIL}\", \"password\": \"{DEMO_PASSWORD}\"}}' | sed -E 's/.*\"token\":\"([^\"]+)\".*/\\1/')\n  curl -s {url}/api/me -H \"Authorization: Bearer $TOKEN\"\n\nCtrl-C stops it.\n",
        metrics = running.metrics_addr,
        key = seeded.api_key,
        op = seeded.operator_token,
    );
    crate::server::shutdown_signal().await;
    println!("stopping");
    running.stop().await
}
