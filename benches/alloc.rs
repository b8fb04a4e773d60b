//! Allocations on the hot path, counted (not asserted) with a counting
//! global allocator. Prints one line per path:
//!   allocations per operation on the measuring thread, and the target.
//! Targets (issue 6): zero allocations per request in key lookup and the
//! admission gate. The rest is context for profiling: a hold + settle pair,
//! the meter, pricing, and the allocations tollgate adds to one proxied
//! request end to end (gateway path minus direct path, same client, same
//! mock upstream, all in this process).
//!
//! Run: `cargo bench --bench alloc`. Exits 1 if a zero-allocation target
//! is missed, so CI or a script can hold the line.

mod common;
mod counting;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{header, HeaderMap, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tollgate::money::Nanos;
use tollgate::proxy::meter::{usage_of_json, SseMeter};

#[global_allocator]
static ALLOC: counting::Counting = counting::Counting;

const N: u64 = 100_000;

/// Allocations per call of `f` on this thread, over `n` calls after one
/// warm-up call (first uses register metrics, size maps, etc.).
fn per_op(n: u64, mut f: impl FnMut()) -> f64 {
    f();
    let before = counting::thread_allocs();
    for _ in 0..n {
        f();
    }
    (counting::thread_allocs() - before) as f64 / n as f64
}

struct Report {
    missed: bool,
}

impl Report {
    fn line(&mut self, name: &str, allocs: f64, target: Option<f64>) {
        let verdict = match target {
            Some(t) if allocs <= t => format!("target {t}: met"),
            Some(t) => {
                self.missed = true;
                format!("target {t}: MISSED")
            }
            None => "(context)".to_string(),
        };
        println!("{name:<52} {allocs:>9.2} allocs/op   {verdict}");
    }
}

fn bearer_headers(secret: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {secret}")).expect("header"),
    );
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h
}

#[allow(clippy::too_many_lines)] // a bench script: one measured case after another
fn main() {
    // The real Prometheus recorder, as `tollgate serve` installs it: the
    // gate's refusal counter goes through it.
    let _metrics = tollgate::metrics::install();
    let rt = common::runtime();
    let (app, store) = common::app(common::config());
    let (key, broke_key) = rt.block_on(async {
        common::funded_wallet(&app, "user:bench").await;
        // Never funded: balance 0 is at the threshold, so it is suspended.
        app.wallets.get("user:broke").await.expect("wallet");
        (
            common::stored_key(&*store, 0, "user:bench").await,
            common::stored_key(&*store, 1, "user:broke").await,
        )
    });
    let unknown = tollgate::auth::mint_key();
    let ok_headers = bearer_headers(&key.secret);
    let broke_headers = bearer_headers(&broke_key.secret);
    let unknown_headers = bearer_headers(&unknown.secret);
    // Fill the cache: a miss is the store's business, not the hot path's.
    for h in [&ok_headers, &broke_headers, &unknown_headers] {
        let _ = rt.block_on(tollgate::proxy::admit(&app, h));
    }

    let mut report = Report { missed: false };
    println!("allocations per operation, measuring thread, {N} operations each");
    let admit = |h: &HeaderMap| {
        tollgate::proxy::admit(&app, h)
            .now_or_never()
            .expect("a cached key never awaits")
    };
    let lookup = |secret: &str| {
        app.keys
            .lookup(secret.as_bytes(), &*store, &app.wallets)
            .now_or_never()
    };
    report.line(
        "key lookup, hit",
        per_op(N, || assert!(matches!(lookup(&key.secret), Some(Ok(_))))),
        Some(0.0),
    );
    report.line(
        "key lookup, negative-cache hit",
        per_op(N, || {
            assert!(matches!(lookup(&unknown.secret), Some(Err(_))))
        }),
        Some(0.0),
    );
    report.line(
        "admission (bearer, lookup, status, gate): admitted",
        per_op(N, || assert!(admit(&ok_headers).is_ok())),
        Some(0.0),
    );
    report.line(
        "admission: suspended wallet, refused (B2)",
        per_op(N, || assert!(admit(&broke_headers).is_err())),
        Some(0.0),
    );
    report.line(
        "admission: unknown key, refused (negative cache)",
        per_op(N, || assert!(admit(&unknown_headers).is_err())),
        Some(0.0),
    );

    // Context: the rest of the request's pieces.
    let p = common::pricing();
    let mini = p.get("gpt-4o-mini").expect("priced");
    let u = common::cached_chat_usage();
    report.line(
        "pricing: get + max_cost + cost",
        per_op(N, || {
            let m = p.get(black_box("gpt-4o-mini")).expect("priced");
            black_box(m.max_cost(512, 16_384));
            black_box(mini.cost(&u));
        }),
        None,
    );
    report.line(
        "meter: usage from a JSON body",
        per_op(N, || {
            black_box(usage_of_json(common::CHAT_JSON));
        }),
        None,
    );
    let events = common::chat_sse_events();
    let n_events = events.len() as f64;
    report.line(
        "meter: SSE, pass-through, per event",
        per_op(N / 10, || {
            let mut m = SseMeter::new(false);
            for e in &events {
                black_box(m.push(e.clone()));
            }
            black_box(m.finish());
        }) / n_events,
        None,
    );

    // A hold + settle pair on the hot wallet: the actor runs on the
    // runtime's workers, so count every thread.
    let w = rt.block_on(app.wallets.get("user:bench")).expect("wallet");
    let ids = AtomicU64::new(1);
    let pairs = 20_000u64;
    let pair = |w: &tollgate::wallet::WalletHandle| {
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let w = w.clone();
        async move {
            let hold = w.hold(id, Nanos(2_000)).await.expect("hold");
            hold.settle(Nanos(1_000), format!("req_{id:x}"), common::facts(u));
        }
    };
    rt.block_on(pair(&w));
    let before = counting::allocs();
    rt.block_on(async {
        for _ in 0..pairs {
            pair(&w).await;
        }
        w.flush().await.expect("flush");
    });
    report.line(
        "wallet: hold + settle pair, all threads, flush incl.",
        (counting::allocs() - before) as f64 / pairs as f64,
        None,
    );

    // End to end: what tollgate adds to one proxied request.
    let (direct, gateway) = rt.block_on(end_to_end());
    report.line("end to end: client -> mock, all threads", direct, None);
    report.line(
        "end to end: client -> tollgate -> mock, all threads",
        gateway,
        None,
    );
    report.line(
        "end to end: added by tollgate per request",
        gateway - direct,
        None,
    );

    drop(w);
    drop(app);
    drop(rt);
    if report.missed {
        eprintln!("a zero-allocation target was missed");
        std::process::exit(1);
    }
}

/// (allocations per request direct, through a gateway), all threads,
/// sequential requests on one kept-alive connection.
async fn end_to_end() -> (f64, f64) {
    let mock = tollgate_mock_upstream::MockUpstream::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mock_url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(mock.serve(listener, std::future::pending()));

    let mut config = common::config();
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.metrics_listen = "127.0.0.1:0".parse().expect("addr");
    config.upstream_url = mock_url.clone();
    let store: Arc<dyn tollgate::store::Store> =
        Arc::new(tollgate::store::memory::MemoryStore::new());
    let running = tollgate::start(config, store.clone(), common::pricing())
        .await
        .expect("gateway starts");
    common::funded_wallet(&running.app, "user:e2e").await;
    let key = common::stored_key(&*store, 0, "user:e2e").await;
    let gateway_url = running.url();

    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build_http();
    let body = Bytes::from_static(
        br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello!"}],"max_tokens":16}"#,
    );
    let auth = format!("Bearer {}", key.secret);
    let send = |base: &str| {
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("{base}/v1/chat/completions"))
            .header(header::AUTHORIZATION, &auth)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .expect("request");
        let client = client.clone();
        async move {
            let resp = client.request(req).await.expect("response");
            assert!(resp.status().is_success(), "status {}", resp.status());
            resp.into_body().collect().await.expect("body");
        }
    };
    let n = 5_000u64;
    let mut per = [0f64; 2];
    for (i, base) in [mock_url.as_str(), gateway_url.as_str()].iter().enumerate() {
        for _ in 0..200 {
            send(base).await;
        }
        // Let the wallet flush what the warm-up settled.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = counting::allocs();
        for _ in 0..n {
            send(base).await;
        }
        per[i] = (counting::allocs() - before) as f64 / n as f64;
    }
    let _ = running.stop().await;
    (per[0], per[1])
}
