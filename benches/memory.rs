//! Memory per cached key and per idle wallet actor, with 100,000 of each
//! (override with TOLLGATE_BENCH_MEMORY_N). Two measures each:
//! - heap: bytes requested from the allocator and still live (counting
//!   global allocator), the cost the code itself decides;
//! - RSS: resident set growth, which adds the allocator's overhead and
//!   the tokio/ractor bookkeeping pages as the OS sees them.
//!
//! Targets (issue 6): at most 1 KiB per cached key, 4 KiB per idle wallet
//! actor.
//!
//! Run: `cargo bench --bench memory`.

mod common;
mod counting;

use std::time::Duration;

#[global_allocator]
static ALLOC: counting::Counting = counting::Counting;

const KEY_TARGET: f64 = 1024.0;
const WALLET_TARGET: f64 = 4096.0;

fn verdict(bytes: f64, target: f64) -> &'static str {
    if bytes <= target {
        "met"
    } else {
        "MISSED"
    }
}

struct Mark {
    heap: i64,
    rss: u64,
}

fn mark() -> Mark {
    Mark {
        heap: counting::live_bytes(),
        rss: counting::rss_bytes().unwrap_or(0),
    }
}

/// (heap bytes, RSS bytes) per item since `m`.
fn per_item(m: &Mark, n: usize) -> (f64, f64) {
    let now = mark();
    (
        (now.heap - m.heap) as f64 / n as f64,
        now.rss.saturating_sub(m.rss) as f64 / n as f64,
    )
}

fn main() {
    let n: usize = std::env::var("TOLLGATE_BENCH_MEMORY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = common::runtime();
    println!("memory with {n} cached keys and {n} idle wallet actors");

    // Cached keys: all on one wallet, so only the cache's own cost counts.
    let (app, store) = common::app(common::config());
    let keys = rt.block_on(async {
        common::funded_wallet(&app, "user:keys").await;
        let mut keys = Vec::with_capacity(n);
        for i in 0..n {
            keys.push(common::stored_key(&*store, i, "user:keys").await.secret);
        }
        keys
    });
    let before = mark();
    rt.block_on(async {
        for k in &keys {
            app.keys
                .lookup(k.as_bytes(), &*store, &app.wallets)
                .await
                .expect("stored key");
        }
    });
    assert_eq!(app.keys.len(), n);
    let (heap, rss) = per_item(&before, n);
    println!(
        "cached key:          {heap:>8.0} B heap  {rss:>8.0} B RSS   target {KEY_TARGET} B: {}",
        verdict(heap.max(rss), KEY_TARGET)
    );
    drop(keys);
    drop(store);
    drop(app);

    // Idle wallet actors: started by first use, then left alone.
    let (app, _store) = common::app(common::config());
    let ids: Vec<String> = (0..n).map(|i| format!("user:w{i:08}")).collect();
    // One actor first, so one-off runtime growth is not charged to the rest.
    rt.block_on(app.wallets.get("user:warm")).expect("wallet");
    let before = mark();
    rt.block_on(async {
        for id in &ids {
            app.wallets.get(id).await.expect("wallet starts");
        }
    });
    // Let every actor finish starting and go idle.
    std::thread::sleep(Duration::from_millis(500));
    let running = app.wallets.running().len();
    let (heap, rss) = per_item(&before, n);
    println!(
        "idle wallet actor:   {heap:>8.0} B heap  {rss:>8.0} B RSS   target {WALLET_TARGET} B: {}   ({running} running)",
        verdict(heap.max(rss), WALLET_TARGET)
    );
    drop(app);
    drop(rt);
}
