//! What only the Redis store can show, beyond the contract suite
//! (`store_contract.rs`): data surviving kill -9, failing fast while Redis
//! is down and recovering with the same store value, a hung Redis timing
//! out, two instances losing no update, pub/sub between instances, the key
//! layout, overflow refused before any write, session expiry and prefixes.
//! Each test on its own `redis-server` (see `common/redis.rs`).

#![allow(
    clippy::unwrap_used,
    reason = "a test's unwrap is its failure report (clippy.toml allows it in #[test] fns only)"
)]

#[path = "common/store.rs"]
mod fixtures;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use fixtures::*;
use tollgate::money::Nanos;
use tollgate::store::memory::MemoryStore;
use tollgate::store::redis_store::RedisStore;
use tollgate::store::*;

/// Poll until `f` holds, for at most `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within {within:?}: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_and_restart() {
    let Some((mut server, store)) = redis_store("acknowledged_writes_survive_kill_9").await else {
        return;
    };
    let w = "user:usr_ann";
    store
        .create_user(&user("usr_ann", "ann@example.com"))
        .await
        .unwrap();
    store
        .put_key(&key("key_a", "usr_ann", None, at(1, 8)))
        .await
        .unwrap();
    store
        .apply(&batch(
            "b1",
            w,
            vec![deposit("dep_1", w, usd(10), Nanos::ZERO)],
        ))
        .await
        .unwrap();
    let settle = batch(
        "b2",
        w,
        vec![settlement(
            "stl_1",
            w,
            "key_a",
            "usr_ann",
            Nanos(1_234),
            at(2, 9),
        )],
    );
    let (_, acknowledged) = store.apply(&settle).await.unwrap();

    server.kill();
    server.restart();

    // A new process (a new store value) finds everything...
    let fresh = RedisStore::connect(&server.url(), PREFIX).await.unwrap();
    // ...and so does the old one, once it has reconnected.
    eventually(Duration::from_secs(10), "old store reconnects", || async {
        store.ping().await.is_ok()
    })
    .await;
    for s in [&fresh as &dyn Store, &store] {
        assert_eq!(s.wallet(w).await.unwrap(), acknowledged);
        assert_eq!(s.ledger(w).await.unwrap().len(), 2);
        assert!(s.user_by_email("ann@example.com").await.unwrap().is_some());
        assert_eq!(
            s.key_by_hash("hash-of-key_a")
                .await
                .unwrap()
                .unwrap()
                .last_used_at,
            Some(at(2, 9))
        );
        assert_eq!(s.usage_rows(w, date(1)).await.unwrap().len(), 1);
        // The batch ids survived too: a resent batch is still applied once.
        assert_eq!(
            s.apply(&settle).await.unwrap(),
            (Applied::Before, acknowledged)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_fast_while_down_and_recovers_with_the_same_store() {
    let Some((mut server, store)) = redis_store("fails_fast_while_down").await else {
        return;
    };
    let w = "user:usr_ann";
    store
        .apply(&batch(
            "b1",
            w,
            vec![deposit("dep_1", w, usd(10), Nanos::ZERO)],
        ))
        .await
        .unwrap();

    server.kill();
    let started = Instant::now();
    let unavailable = |r: StoreError| matches!(r, StoreError::Unavailable(_));
    assert!(unavailable(store.ping().await.unwrap_err()));
    assert!(unavailable(store.wallet(w).await.unwrap_err()));
    let pending = batch("b2", w, vec![deposit("dep_2", w, usd(5), Nanos::ZERO)]);
    assert!(unavailable(store.apply(&pending).await.unwrap_err()));
    assert!(unavailable(store.user("usr_ann").await.unwrap_err()));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "four calls against a dead Redis took {:?}",
        started.elapsed()
    );

    server.restart();
    eventually(
        Duration::from_secs(10),
        "the same store reconnects",
        || async { store.ping().await.is_ok() },
    )
    .await;
    // The batch refused while down never landed: it applies now, once.
    let (applied, bal) = store.apply(&pending).await.unwrap();
    assert_eq!((applied, bal.paid), (Applied::Now, usd(15)));
    assert_eq!(store.apply(&pending).await.unwrap().0, Applied::Before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_times_out_instead_of_hanging() {
    let Some((server, store)) = redis_store("a_hung_redis_times_out").await else {
        return;
    };
    let w = "user:usr_ann";
    server.pause();
    let started = Instant::now();
    let r = store
        .apply(&batch(
            "b1",
            w,
            vec![deposit("dep_1", w, usd(1), Nanos::ZERO)],
        ))
        .await;
    let took = started.elapsed();
    server.resume();
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // The write may have been queued and applied after all: a resend with
    // the same batch id lands exactly once either way.
    eventually(
        Duration::from_secs(10),
        "the store answers again",
        || async { store.ping().await.is_ok() },
    )
    .await;
    store
        .apply(&batch(
            "b1",
            w,
            vec![deposit("dep_1", w, usd(1), Nanos::ZERO)],
        ))
        .await
        .unwrap();
    assert_eq!(store.wallet(w).await.unwrap().paid, usd(1));
    assert_eq!(store.ledger(w).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_lose_no_update() {
    let Some((server, a)) = redis_store("two_instances_lose_no_update").await else {
        return;
    };
    let b = RedisStore::connect(&server.url(), PREFIX).await.unwrap();
    let stores: [Arc<dyn Store>; 2] = [Arc::new(a), Arc::new(b)];
    let w = "team:tm_shared";
    let mut tasks = Vec::new();
    for (n, store) in stores.iter().enumerate() {
        for i in 0..200i64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("{n}-{i}");
                let e = if i % 2 == 0 {
                    deposit(&format!("dep_{id}"), w, Nanos(1_000 + i), Nanos(i))
                } else {
                    settlement(
                        &format!("stl_{id}"),
                        w,
                        "key_a",
                        "usr_1",
                        Nanos(i),
                        at(3, 9),
                    )
                };
                store.apply(&batch(&format!("b_{id}"), w, vec![e])).await
            }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().0, Applied::Now);
    }
    let evens: i64 = (0..200).filter(|i| i % 2 == 0).sum();
    let odds: i64 = (0..200).filter(|i| i % 2 == 1).sum();
    let paid = 2 * (100 * 1_000 + evens) - 2 * odds;
    let promo = 2 * evens;
    for s in &stores {
        assert_eq!(
            s.wallet(w).await.unwrap(),
            WalletBalance {
                paid: Nanos(paid),
                promo: Nanos(promo)
            }
        );
        assert_eq!(s.ledger(w).await.unwrap().len(), 400);
        let t = s.money_totals().await.unwrap();
        assert_eq!(t.usage, Nanos(2 * odds).into());
        assert_eq!(t.balances, t.deposits - t.usage);
        let rows = s.usage_rows(w, date(1)).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].usage.calls, 200);
        assert_eq!(rows[0].usage.spend, Nanos(2 * odds));
    }
}

/// Publish on `from` until `rx` hears `want`: the subscription is set up
/// in the background, so the first messages may go unheard.
async fn hear(
    from: &RedisStore,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Change>,
    want: Change,
) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        from.publish(&want).await.ok();
        if let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            if got == want {
                return;
            }
        }
    }
    panic!("{want:?} not received within 15 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_published_by_one_instance_reach_another() {
    let Some((mut server, a)) = redis_store("changes_reach_another_instance").await else {
        return;
    };
    let b = RedisStore::connect(&server.url(), PREFIX).await.unwrap();
    assert!(MemoryStore::new().subscribe().is_none());
    let mut rx = b.subscribe().expect("redis store subscribes");

    hear(&a, &mut rx, Change::Key("key_1".into())).await;
    hear(&a, &mut rx, Change::Wallet("team:tm_1".into())).await;

    // Redis restarts: the subscriber reconnects by itself.
    server.kill();
    server.restart();
    hear(&a, &mut rx, Change::Key("key_2".into())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallets_keys_share_one_hash_slot_and_the_prefix() {
    let Some((server, store)) = redis_store("wallet_keys_share_a_slot").await else {
        return;
    };
    let w = "team:tm_slot";
    store
        .put_key(&key("key_s", "usr_1", Some("tm_slot"), at(1, 8)))
        .await
        .unwrap();
    store
        .apply(&batch(
            "b1",
            w,
            vec![
                deposit("dep_1", w, usd(1), Nanos::ZERO),
                settlement("stl_1", w, "key_s", "usr_1", Nanos(5), at(2, 9)),
            ],
        ))
        .await
        .unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let all: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(all.iter().all(|k| k.starts_with(PREFIX)), "{all:?}");
    let wallet_keys: Vec<&String> = all
        .iter()
        .filter(|k| k.contains("{team:tm_slot}"))
        .collect();
    assert!(wallet_keys.len() >= 7, "{wallet_keys:?}");
    for k in &wallet_keys {
        // The hash tag is the first {...}: the wallet id, for every one.
        let tag = k.split('{').nth(1).and_then(|r| r.split('}').next());
        assert_eq!(tag, Some(w), "{k}");
    }
    // Money is stored as integers, never as floats.
    let paid: String = redis::cmd("HGET")
        .arg(format!("{PREFIX}{{{w}}}:bal"))
        .arg("paid")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(paid, (usd(1) - Nanos(5)).0.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_would_overflow_is_refused_before_any_write() {
    let Some((_server, store)) = redis_store("overflow_refused").await else {
        return;
    };
    let w = "user:usr_rich";
    // A batch moves the deposits counter by at most 4e18 (apply.lua's
    // carry unit): 8.9e18 arrives in three.
    for (i, n) in [
        3_000_000_000_000_000_000,
        3_000_000_000_000_000_000,
        2_900_000_000_000_000_000,
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("dep_0{i}");
        store
            .apply(&batch(&id, w, vec![deposit(&id, w, Nanos(n), Nanos::ZERO)]))
            .await
            .unwrap();
    }
    let r = store
        .apply(&batch(
            "b2",
            w,
            vec![
                settlement("stl_1", w, "key_a", "usr_rich", Nanos(1), at(2, 9)),
                // 9.3e18 > i64::MAX: HINCRBY would fail after earlier writes.
                deposit("dep_2", w, Nanos(400_000_000_000_000_000), Nanos::ZERO),
            ],
        ))
        .await;
    assert!(matches!(r, Err(StoreError::OutOfRange(_))), "{r:?}");
    assert_eq!(
        store.wallet(w).await.unwrap().paid,
        Nanos(8_900_000_000_000_000_000)
    );
    assert_eq!(store.ledger(w).await.unwrap().len(), 3);
    assert_eq!(store.usage_rows(w, date(1)).await.unwrap(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_in_redis_and_prefixes_keep_stores_apart() {
    let Some((server, store)) = redis_store("sessions_expire_and_prefixes").await else {
        return;
    };
    let soon = SessionRecord {
        token_hash: "short".into(),
        user_id: "usr_ann".into(),
        expires_at: Utc::now() + chrono::Duration::milliseconds(300),
    };
    store.put_session(&soon).await.unwrap();
    assert_eq!(store.session("short").await.unwrap(), Some(soon));
    eventually(Duration::from_secs(5), "the session expires", || async {
        store.session("short").await.unwrap().is_none()
    })
    .await;
    let past = SessionRecord {
        token_hash: "past".into(),
        user_id: "usr_ann".into(),
        expires_at: Utc::now() - chrono::Duration::hours(1),
    };
    store.put_session(&past).await.unwrap();
    assert_eq!(store.session("past").await.unwrap(), None);

    let other = RedisStore::connect(&server.url(), "other:").await.unwrap();
    let w = "user:usr_ann";
    store
        .apply(&batch(
            "b1",
            w,
            vec![deposit("dep_1", w, usd(1), Nanos::ZERO)],
        ))
        .await
        .unwrap();
    assert_eq!(other.wallet(w).await.unwrap(), WalletBalance::default());
    assert_eq!(other.money_totals().await.unwrap(), MoneyTotals::default());
}

#[tokio::test]
async fn connect_to_nothing_is_unavailable_not_a_hang() {
    // A port nobody listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let r = RedisStore::connect(&format!("redis://127.0.0.1:{port}/"), PREFIX).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))));
    assert!(started.elapsed() < Duration::from_secs(5));
    let r = RedisStore::connect("not a url", PREFIX).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))));
}

/// Data written by apply v1 (every batch id in a set, every entry's index
/// in `entries`, the ledger list) is brought to v2 at boot: deposits and
/// transfers by id as JSON, settlement ids and the batch set gone; with
/// export on, the list moved into the export stream. Run twice, the
/// second changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_ledger_data_is_upgraded_once() {
    let Some((server, store)) = redis_store("v1_ledger_data_is_upgraded_once").await else {
        return;
    };
    let w = "user:usr_old";
    let dep = deposit("dep_1", w, usd(5), Nanos::ZERO);
    let stl = settlement("stl_1", w, "key_a", "usr_old", Nanos(7), at(2, 9));
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let k = |part: &str| format!("{PREFIX}{{{w}}}:{part}");
    // The v1 layout, by hand.
    let _: () = redis::pipe()
        .cmd("SADD")
        .arg(format!("{PREFIX}wallets"))
        .arg(w)
        .ignore()
        .cmd("RPUSH")
        .arg(k("ledger"))
        .arg(serde_json::to_string(&dep).unwrap())
        .ignore()
        .cmd("RPUSH")
        .arg(k("ledger"))
        .arg(serde_json::to_string(&stl).unwrap())
        .ignore()
        .cmd("HSET")
        .arg(k("entries"))
        .arg("dep_1")
        .arg("0")
        .arg("stl_1")
        .arg("1")
        .ignore()
        .cmd("SADD")
        .arg(k("batches"))
        .arg("b1")
        .arg("b2")
        .ignore()
        .query_async(&mut c)
        .await
        .unwrap();
    let store = store.with_policy(LedgerPolicy {
        export: true,
        ..LedgerPolicy::default()
    });
    let changed = store.upgrade_layout().await.unwrap();
    assert_eq!(
        changed,
        2 + 1 + 2,
        "two entries, the batch set, two list rows"
    );
    assert_eq!(
        store.ledger_entry(w, "dep_1").await.unwrap(),
        Some(dep.clone())
    );
    assert_eq!(store.ledger_entry(w, "stl_1").await.unwrap(), None);
    let batches: bool = redis::cmd("EXISTS")
        .arg(k("batches"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!batches);
    let waiting: Vec<LedgerEntry> = store
        .export_read(w, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.entry)
        .collect();
    assert_eq!(waiting, vec![dep, stl]);
    let list: i64 = redis::cmd("LLEN")
        .arg(k("ledger"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(list, 0);
    assert_eq!(store.upgrade_layout().await.unwrap(), 0, "once");
}
