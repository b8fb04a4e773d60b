//! G3 on the memory store: `tollgate serve` as a child process on the
//! memory store, 150,000 calls after a warm-up: its resident memory stays
//! within 60 MB of the warm-up's, and once the ledger ring is full
//! (`memory_ledger_entries`, 100,000) the last 50,000 calls add next to
//! nothing (an unbounded ledger would add about 20 MB there).

#![allow(clippy::unwrap_used)]

#[path = "common/calls.rs"]
mod calls;
mod common;
#[path = "common/process.rs"]
mod process;
#[path = "common/redis.rs"]
mod redis_harness;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use process::*;
use reqwest::StatusCode;

/// Resident memory of a process, in bytes (`VmRSS` of /proc/PID/status).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

/// `n` calls, `concurrency` at a time, over one HTTP client; all must be 200.
async fn calls(api: &Arc<Api>, key: &str, n: usize, concurrency: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (api, key, next) = (api.clone(), key.to_string(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let r = api
                        .http
                        .post(format!("{}/v1/chat/completions", api.url))
                        .bearer_auth(&key)
                        .json(&chat_body("gpt-4o-mini"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), StatusCode::OK);
                    r.bytes().await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_rss_stays_flat_over_150_000_calls() {
    let mock = spawn_mock().await;
    let gw = Gw::start_with("memory", &mock.url, &[]).await;
    let pid = gw.child.as_ref().unwrap().id();
    let api = Arc::new(Api::new(&gw.api.url));
    let (_, key) = gw.funded("rss@example.com", "1000000").await;
    calls(&api, &key, 10_000, 16).await;
    let warm = rss(pid);
    // 100,000 more fill the ring; the last 50,000 run with it full.
    calls(&api, &key, 100_000, 16).await;
    let full = rss(pid);
    calls(&api, &key, 50_000, 16).await;
    let after = rss(pid);
    let rec = gw.reconcile().await;
    assert_eq!(rec["ok"], true, "{rec}");
    let mb = |b: u64| b as f64 / 1e6;
    let growth = after as i64 - warm as i64;
    let tail = after as i64 - full as i64;
    println!(
        "memory store RSS: {:.1} MB after 10,000 warm-up calls, {:.1} MB after 100,000 more \
         (ring full), {:.1} MB after 50,000 more: growth {:.1} MB over 150,000 calls, \
         {:.1} MB over the last 50,000",
        mb(warm),
        mb(full),
        mb(after),
        growth as f64 / 1e6,
        tail as f64 / 1e6
    );
    assert!(
        growth < 60_000_000,
        "RSS grew {growth} bytes over 150,000 calls (bound: 60 MB)"
    );
    assert!(
        tail < 8_000_000,
        "RSS grew {tail} bytes over 50,000 calls with the ring full"
    );
}
