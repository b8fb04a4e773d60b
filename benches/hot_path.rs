//! Criterion benches of the proxy's hot path, piece by piece:
//! - `key_lookup`: the key cache on a hit, a miss that asks the store (an
//!   unknown key, and a known key just invalidated), a negative-cache hit,
//!   and the whole admission (`proxy::admit`: bearer, lookup, status, gate);
//! - `wallet`: one wallet's hold + settle round trip from 1, 8 and 64
//!   concurrent tasks (throughput = pairs per second);
//! - `meter`: usage from a JSON body and from an SSE stream;
//! - `pricing`: model lookup, exact cost, hold estimate.
//!
//! Run: `cargo bench --bench hot_path` (add `-- key_lookup` to filter).

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use futures_util::FutureExt;
use http::{header, HeaderMap, HeaderValue};
use tollgate::auth::KeyCache;
use tollgate::money::Nanos;
use tollgate::pricing::Usage;
use tollgate::proxy::meter::{usage_of_json, SseMeter};
use tollgate::store::UsageFacts;

fn key_lookup(c: &mut Criterion) {
    let rt = common::runtime();
    let (app, store) = common::app(common::config());
    let key = rt.block_on(async {
        common::funded_wallet(&app, "user:bench").await;
        common::stored_key(&*store, 0, "user:bench").await
    });
    let unknown = tollgate::auth::mint_key();
    let lookup = |k: &str| {
        app.keys
            .lookup(k.as_bytes(), &*app.store, &app.wallets)
            .now_or_never()
    };
    // Warm the cache: the hit and the negative entry.
    assert!(rt
        .block_on(
            app.keys
                .lookup(key.secret.as_bytes(), &*store, &app.wallets)
        )
        .is_ok());
    assert!(rt
        .block_on(
            app.keys
                .lookup(unknown.secret.as_bytes(), &*store, &app.wallets)
        )
        .is_err());

    let mut g = c.benchmark_group("key_lookup");
    g.throughput(Throughput::Elements(1));
    g.bench_function("hit", |b| {
        b.iter(|| {
            let r = lookup(black_box(&key.secret)).expect("a hit never awaits");
            black_box(r.is_ok())
        })
    });
    g.bench_function("negative_hit", |b| {
        b.iter(|| {
            let r = lookup(black_box(&unknown.secret)).expect("a negative hit never awaits");
            black_box(r.is_err())
        })
    });
    // A true miss every time: a zero negative TTL never answers from cache,
    // so each lookup of the unknown key asks the (memory) store.
    let uncached = KeyCache::new(Duration::ZERO);
    g.bench_function("miss_unknown", |b| {
        b.iter(|| {
            let r = rt.block_on(uncached.lookup(
                black_box(unknown.secret.as_bytes()),
                &*store,
                &app.wallets,
            ));
            black_box(r.is_err())
        })
    });
    // A known key after invalidation (K5): store read, wallet handle,
    // entry built and cached.
    g.bench_function("miss_fill", |b| {
        b.iter(|| {
            app.keys.invalidate(&key.hash_hex);
            let r = rt.block_on(app.keys.lookup(
                black_box(key.secret.as_bytes()),
                &*store,
                &app.wallets,
            ));
            black_box(r.is_ok())
        })
    });
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {}", key.secret)).expect("header"),
    );
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    g.bench_function("admit", |b| {
        b.iter(|| {
            let r = tollgate::proxy::admit(&app, black_box(&headers))
                .now_or_never()
                .expect("admission on a cached key never awaits");
            black_box(r.is_ok())
        })
    });
    g.finish();
    drop(rt);
}

/// The usage of one small settled chat.
fn facts() -> UsageFacts {
    common::facts(Usage {
        input_tokens: 12,
        cached_tokens: 0,
        output_tokens: 16,
    })
}

/// One hot wallet, `tasks` concurrent clients, each doing hold then settle
/// as the proxy does (the settle is a cast; the next hold queues behind it).
/// The wallet flushes to the memory store as in production (every 10 ms).
///
/// Each sample runs on a fresh runtime, gateway and store (built and torn
/// down outside the timing): the memory store keeps every ledger entry, and
/// past a million entries one of its resizes stalls a flush, and with it
/// the actor, for 0.4-0.8 s (benches/store_apply.rs), which would swamp
/// what this measures. Flat sampling keeps every sample the same size.
fn wallet(c: &mut Criterion) {
    let mut g = c.benchmark_group("wallet_hold_settle");
    g.throughput(Throughput::Elements(1));
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(50);
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));
    for tasks in [1u64, 8, 64] {
        g.bench_with_input(BenchmarkId::from_parameter(tasks), &tasks, |b, &tasks| {
            b.iter_custom(|iters| {
                let rt = common::runtime();
                let (app, _store) = common::app(common::config());
                let w = rt.block_on(common::funded_wallet(&app, "user:hot"));
                let ids = Arc::new(AtomicU64::new(1));
                let took = rt.block_on(async {
                    let started = Instant::now();
                    let mut joins = Vec::with_capacity(tasks as usize);
                    for t in 0..tasks {
                        let n = iters / tasks + u64::from(t < iters % tasks);
                        let w = w.clone();
                        let ids = ids.clone();
                        joins.push(tokio::spawn(async move {
                            for _ in 0..n {
                                let id = ids.fetch_add(1, Ordering::Relaxed);
                                let hold = w.hold(id, Nanos(2_000)).await.expect("hold");
                                hold.settle(Nanos(1_000), format!("req_{id:x}"), facts());
                            }
                        }));
                    }
                    for j in joins {
                        j.await.expect("task");
                    }
                    started.elapsed()
                });
                // The runtime takes the actor and the store with it.
                drop(w);
                drop(app);
                drop(rt);
                took
            })
        });
    }
    g.finish();
}

fn meter(c: &mut Criterion) {
    let mut g = c.benchmark_group("meter");
    g.throughput(Throughput::Bytes(common::CHAT_JSON.len() as u64));
    g.bench_function("json_usage", |b| {
        b.iter(|| black_box(usage_of_json(black_box(common::CHAT_JSON))))
    });

    // An SSE stream as the upstream sends it: one event per chunk.
    let events = common::chat_sse_events();
    let whole = Bytes::from_static(common::CHAT_SSE);
    g.throughput(Throughput::Bytes(whole.len() as u64));
    for (name, hide) in [
        ("sse_usage_passthrough", false),
        ("sse_usage_injected", true),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut m = SseMeter::new(hide);
                for e in &events {
                    black_box(m.push(e.clone()));
                }
                black_box(m.finish());
                black_box(m.usage().expect("the fixture reports usage"))
            })
        });
    }
    g.bench_function("sse_usage_one_chunk", |b| {
        b.iter(|| {
            let mut m = SseMeter::new(false);
            black_box(m.push(whole.clone()));
            black_box(m.usage().expect("the fixture reports usage"))
        })
    });
    g.finish();
}

fn pricing(c: &mut Criterion) {
    let p = common::pricing();
    let mini = p.get("gpt-4o-mini").expect("priced");
    let u = common::cached_chat_usage();
    let mut g = c.benchmark_group("pricing");
    g.throughput(Throughput::Elements(1));
    g.bench_function("get", |b| {
        b.iter(|| black_box(p.get(black_box("gpt-4o-mini")).is_some()))
    });
    g.bench_function("cost", |b| b.iter(|| black_box(mini.cost(black_box(&u)))));
    g.bench_function("max_cost", |b| {
        b.iter(|| black_box(mini.max_cost(black_box(512), black_box(16_384))))
    });
    g.finish();
}

criterion_group!(benches, key_lookup, wallet, meter, pricing);
criterion_main!(benches);
