//! The ledger database (G1, G2, B9, U1) against real servers: a private
//! PostgreSQL (`initdb` + `pg_ctl`) and a private redis-server per test, a
//! gateway in this process or as a child process, real calls through the
//! mock upstream. Shows: one request record per billed call whose costs sum
//! to the reconciliation exactly; PostgreSQL stopped under load and started
//! again, and the gateway killed (-9) at random points of the export,
//! losing and doubling nothing; Redis memory that does not grow with calls.

#![allow(clippy::unwrap_used)]

#[path = "common/calls.rs"]
mod calls;
mod common;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/process.rs"]
mod process;
#[path = "common/redis.rs"]
mod redis_harness;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use pg::PgServer;
use process::*;
use redis_harness::RedisServer;
use reqwest::StatusCode;
use serde_json::Value;
use tollgate::ledger_db::{LedgerDb, RequestTotals};
use tollgate::pricing::Pricing;
use tollgate::store::prelude::*;
use tollgate::store::redis_store::RedisStore;
use tollgate::store::LedgerPolicy;

/// A Redis, a PostgreSQL, a mock upstream, and a gateway in this process
/// exporting to the PostgreSQL.
struct Rig {
    redis: RedisServer,
    pg: PgServer,
    gw: Gateway,
    db: LedgerDb,
}

fn exporting() -> LedgerPolicy {
    LedgerPolicy {
        export: true,
        ..LedgerPolicy::default()
    }
}

async fn rig(test: &str) -> Option<Rig> {
    rig_with(test, |_| {}).await
}

async fn rig_with(test: &str, tweak: impl FnOnce(&mut tollgate::config::Config)) -> Option<Rig> {
    let pg = PgServer::start(test)?;
    let redis = RedisServer::start(test)?;
    let mock = spawn_mock().await;
    let mut config = test_config(&mock.url);
    config.ledger.url = Some(tollgate::config::Secret(pg.url()));
    tweak(&mut config);
    let store: Arc<dyn Store> = Arc::new(
        RedisStore::connect(&redis.url(), "tg:")
            .await
            .unwrap()
            .with_policy(config.ledger.policy()),
    );
    let pricing = Pricing::parse(PRICING, "config/pricing.toml").unwrap();
    let clock = Arc::new(tollgate::clock::ShiftedClock::default());
    let running = tollgate::server::start_with_clock(config, store.clone(), pricing, clock.clone())
        .await
        .unwrap();
    let url = running.url();
    let gw = Gateway {
        running,
        clock,
        mock,
        api: Api::new(&url),
        store,
    };
    let db = LedgerDb::connect(&pg.url()).await.unwrap();
    Some(Rig { redis, pg, gw, db })
}

/// Poll `cond` for up to a minute (PostgreSQL restarts, export retries).
async fn wait_long<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Flush every wallet (the reconciliation does), then wait until no
/// export queue holds an entry; answers the reconciliation.
async fn drained(api: &Api, store: &dyn Store) -> Value {
    let rec = api.reconcile().await;
    wait_long("export queues drained", || async {
        store.export_wallets().await.is_ok_and(|w| w.is_empty())
    })
    .await;
    rec
}

fn usage_total(rec: &Value) -> i128 {
    let t = rec["usage_total"].as_str().unwrap();
    i128::from(nanos(t))
}

/// `n` chat calls on `key`, `concurrency` at a time, tokens varied per
/// call; answers how many got 200.
async fn calls(api: &Arc<Api>, key: &str, n: usize, concurrency: usize) -> usize {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (api, key, next) = (api.clone(), key.to_string(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return ok;
                }
                let prompt = (10 + i % 97).to_string();
                let out = (1 + i % 31).to_string();
                let knobs = [
                    ("x-mock-prompt-tokens", prompt.as_str()),
                    ("x-mock-completion-tokens", out.as_str()),
                ];
                let r = api.chat(&key, &chat_body("gpt-4o-mini"), &knobs).await;
                if r.status() == StatusCode::OK && r.bytes().await.is_ok() {
                    ok += 1;
                }
            }
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    ok
}

#[tokio::test]
async fn every_call_is_one_request_record_and_costs_sum_to_the_reconciliation() {
    let Some(rig) = rig("every_call_is_one_request_record").await else {
        return;
    };
    let gw = &rig.gw;
    let api = Arc::new(Api::new(&gw.url));
    let (owner, _archived_by_the_team) = gw.funded("owner@example.com", "100").await;
    let (_, other) = gw.funded("other@example.com", "100").await;
    let team = gw.team(&owner, "Ledger team").await;
    let fund = gw.team_deposit(&team, "50").await;
    assert_eq!(fund.status(), StatusCode::CREATED);
    let (_, team_key) = gw.team_key(&team, &owner, None).await;
    let (a, b) = tokio::join!(calls(&api, &team_key, 300, 8), calls(&api, &other, 200, 4));
    assert_eq!((a, b), (300, 200), "every call was served");

    let rec = drained(gw, &*gw.store).await;
    assert_eq!(rec["ok"], true, "{rec}");
    let totals = rig.db.request_totals().await.unwrap();
    assert_eq!(
        totals,
        RequestTotals {
            requests: 500,
            cost: usage_total(&rec),
        },
        "one record per call, costs summing to the reconciliation exactly"
    );

    // The Owner's ledger view reads PostgreSQL: every settlement of the
    // team wallet once, and the deposit and the creation transfer.
    let ledger = get_json_ok(gw, &format!("/api/teams/{team}/ledger"), &owner.token).await;
    let entries = ledger.as_array().unwrap();
    let settlements = entries.iter().filter(|e| e["kind"] == "settlement").count();
    assert_eq!(settlements, 300, "{}", entries.len());
    let mut ids: Vec<&str> = entries.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), entries.len(), "no entry twice");
    drop(rig.redis);
}

async fn get_json_ok(api: &Api, path: &str, token: &str) -> Value {
    let r = api.get(path, Some(token)).await;
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.json().await.unwrap()
}

#[tokio::test]
async fn postgres_away_under_load_loses_and_doubles_nothing() {
    let Some(mut rig) = rig("postgres_away_under_load").await else {
        return;
    };
    let (user, key) = rig.gw.funded("load@example.com", "1000").await;
    let load = Load::start(&rig.gw.url, &key, 6);
    load.until_served("warm-up", 100).await;
    rig.pg.stop();
    let at_stop = load.served();
    // Calls go on while PostgreSQL is away: the backlog waits in Redis.
    load.until_served("calls while postgres is away", at_stop + 300)
        .await;
    let wallet = format!("user:{}", user.id);
    let waiting = rig.gw.store.export_backlog(&wallet).await.unwrap();
    assert!(
        waiting > 0,
        "entries wait in Redis while PostgreSQL is away"
    );
    rig.pg.restart();
    let served = load.stop().await;

    let rec = drained(&rig.gw, &*rig.gw.store).await;
    assert_eq!(rec["ok"], true, "{rec}");
    let totals = rig.db.request_totals().await.unwrap();
    println!("served {served}, waited in Redis at one point: {waiting}");
    assert_eq!(totals.requests, served as i64, "none lost, none doubled");
    assert_eq!(totals.cost, usage_total(&rec));
}

/// G2's bound: with PostgreSQL away, a wallet's backlog grows to
/// `ledger_backlog_max`; then its flushes fail, and after
/// `flush_failure_bound_ms` it refuses new holds (503). When PostgreSQL is
/// back the backlog drains, calls are served again, and every served call
/// is in PostgreSQL once.
#[tokio::test]
async fn a_full_backlog_stops_admitting_until_postgres_returns() {
    let Some(mut rig) = rig_with("a_full_backlog_stops_admitting", |c| {
        c.ledger.backlog_max = 40;
        c.flush_failure_bound = Duration::from_millis(200);
    })
    .await
    else {
        return;
    };
    let api = Arc::new(Api::new(&rig.gw.url));
    let (user, key) = rig.gw.funded("full@example.com", "1000").await;
    assert_eq!(calls(&api, &key, 20, 4).await, 20);
    drained(&rig.gw, &*rig.gw.store).await;
    rig.pg.stop();
    let mut served: i64 = 20;
    let mut refused = false;
    for _ in 0..2_000 {
        let r = api.chat(&key, &chat_body("gpt-4o-mini"), &[]).await;
        match r.status() {
            StatusCode::OK => served += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                refused = true;
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused, "a wallet with a full backlog stops admitting");
    let wallet = format!("user:{}", user.id);
    let waiting = rig.gw.store.export_backlog(&wallet).await.unwrap();
    assert!(
        waiting <= 40,
        "the backlog stays within its bound: {waiting}"
    );
    rig.pg.restart();
    let again = std::sync::atomic::AtomicI64::new(0);
    wait_long("served again once PostgreSQL is back", || async {
        let r = api.chat(&key, &chat_body("gpt-4o-mini"), &[]).await;
        let ok = r.status() == StatusCode::OK;
        if ok {
            again.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        ok
    })
    .await;
    served += again.into_inner();
    let rec = drained(&rig.gw, &*rig.gw.store).await;
    assert_eq!(rec["ok"], true, "{rec}");
    let totals = rig.db.request_totals().await.unwrap();
    println!("served {served} (backlog bound 40, {waiting} waiting when refused)");
    assert_eq!(totals.requests, served, "none lost, none doubled");
    assert_eq!(totals.cost, usage_total(&rec));
}

/// G1: Redis memory after the exporter drained does not grow with calls.
#[tokio::test]
async fn redis_memory_does_not_grow_with_requests() {
    let Some(rig) = rig("redis_memory_does_not_grow_with_requests").await else {
        return;
    };
    let gw = &rig.gw;
    let api = Arc::new(Api::new(&gw.url));
    let (_, key) = gw.funded("mem@example.com", "100000").await;
    assert_eq!(calls(&api, &key, 2_000, 16).await, 2_000);
    drained(gw, &*gw.store).await;
    let (mem0, data0, keys0) = redis_memory(&rig.redis).await;
    const N: usize = 20_000;
    assert_eq!(calls(&api, &key, N, 16).await, N);
    drained(gw, &*gw.store).await;
    let (mem1, data1, keys1) = redis_memory(&rig.redis).await;
    let per = |a: i64, b: i64| (b as f64 - a as f64) / N as f64;
    println!(
        "redis used_memory {mem0} -> {mem1} bytes ({:.2} bytes/request), dataset \
         {data0} -> {data1} ({:.2} bytes/request), DBSIZE {keys0} -> {keys1}, over {N} calls",
        per(mem0, mem1),
        per(data0, data1)
    );
    // Fewer is fine: the notifications' fan-out queue (N3) may have held
    // the funding's event at the first count and be drained (its keys
    // gone) by the second.
    assert!(keys1 <= keys0, "no key per request: {keys0} -> {keys1}");
    assert!(
        per(data0, data1) < 8.0,
        "{} bytes per request",
        per(data0, data1)
    );
    assert_eq!(
        rig.db.request_totals().await.unwrap().requests,
        (N + 2_000) as i64
    );
}

/// `used_memory`, `used_memory_dataset` and `DBSIZE`, over a plain
/// connection. The dataset figure leaves out client buffers and the
/// script cache, which move by tens of kilobytes on their own.
async fn redis_memory(server: &RedisServer) -> (i64, i64, i64) {
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut c)
        .await
        .unwrap();
    let field = |name: &str| -> i64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let keys: i64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
    (field("used_memory:"), field("used_memory_dataset:"), keys)
}

/// kill -9 of the gateway (a child process) at random points while it
/// exports under load, three times; then every entry Redis applied is in
/// PostgreSQL exactly once.
#[tokio::test]
async fn kill_9_during_export_loses_and_doubles_nothing() {
    let Some(pg) = PgServer::start("kill_9_during_export") else {
        return;
    };
    let Some(redis) = RedisServer::start("kill_9_during_export") else {
        return;
    };
    let mock = spawn_mock().await;
    let extra = [("TOLLGATE_LEDGER_URL", pg.url())];
    let mut gw = Gw::start_with(&redis.url(), &mock.url, &extra).await;
    let (user, key) = gw.funded("kill@example.com", "1000").await;
    let load = Load::start(&gw.api.url, &key, 6);
    let mut seed = std::process::id() as u64;
    for round in 0..3 {
        // A pseudo-random point: 40 to 290 more calls.
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let more = 40 + (seed >> 33) % 250;
        let target = load.served() + more;
        load.until_served(&format!("round {round}"), target).await;
        gw.kill9();
        gw.spawn().await;
    }
    load.until_served("after the last restart", load.served() + 100)
        .await;
    load.stop().await;

    let rec = gw.reconcile().await;
    assert_eq!(rec["ok"], true, "{rec}");
    let store = RedisStore::connect(&redis.url(), "tollgate:")
        .await
        .unwrap()
        .with_policy(exporting());
    wait_long("export queues drained", || async {
        store.export_wallets().await.is_ok_and(|w| w.is_empty())
    })
    .await;
    let db = LedgerDb::connect(&pg.url()).await.unwrap();
    let totals = db.request_totals().await.unwrap();
    // Every settlement Redis applied counted one call in the day buckets,
    // in the same atomic step as its export entry.
    let wallet = format!("user:{}", user.id);
    let from = chrono::Utc::now().date_naive() - chrono::Duration::days(1);
    let calls: u64 = store
        .usage_rows(&wallet, from)
        .await
        .unwrap()
        .iter()
        .map(|r| r.usage.calls)
        .sum();
    println!(
        "applied {calls} settlements; postgres holds {}",
        totals.requests
    );
    assert_eq!(totals.requests, calls as i64, "none lost, none doubled");
    assert_eq!(totals.cost, usage_total(&rec));
}
