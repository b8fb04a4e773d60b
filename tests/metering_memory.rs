//! M8 through real sockets: a non-streamed answer is relayed as it arrives,
//! never buffered whole, and the read timeout (not a size limit) is the only
//! bound on it. Its own test binary, so no other test file shares this
//! process and its peak RSS; the tests here run one at a time (`SERIAL`)
//! for the same reason.
//!
//! The upstream is a tiny stub writing exact bytes from one shared `Bytes`
//! (a clone is a reference, never a copy), so the only copies of the answer
//! made after the baseline are the ones the gateway and the client make.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/stub.rs"]
mod stub;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use reqwest::StatusCode;
use stub::{stub, Step};
use tokio::sync::Mutex;

/// One test at a time: the memory test's measure must not see another
/// test's gateway (or its Argon2 hashing, ~19 MiB a sign-up).
static SERIAL: Mutex<()> = Mutex::const_new(());

/// The head of a 200 JSON answer of `len` bytes.
fn json_head(len: usize) -> Bytes {
    Bytes::from(format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {len}\r\n\r\n"
    ))
}

/// The head of a 200 JSON answer, then `body` in `pieces` pieces with
/// `gap` between them (slices of `body`: no copy).
fn trickled(body: &Bytes, pieces: usize, gap: Duration) -> Vec<Step> {
    let mut steps = vec![Step::Send(json_head(body.len()))];
    let size = body.len().div_ceil(pieces);
    for (i, at) in (0..body.len()).step_by(size).enumerate() {
        if i > 0 && !gap.is_zero() {
            steps.push(Step::Sleep(gap));
        }
        steps.push(Step::Send(body.slice(at..(at + size).min(body.len()))));
    }
    steps
}

/// An OpenAI embeddings answer: `vectors` vectors of `dims` floats (seven
/// or eight decimals, about half negative, as real ones look), then the
/// usage.
fn embeddings_answer(vectors: usize, dims: usize, prompt_tokens: u64) -> Bytes {
    const TAIL: &str = r#"],"model":"text-embedding-3-small","usage":{"prompt_tokens":"#;
    // At most 12 bytes a float with its comma, 64 a vector's wrapping:
    // reserved at once, so no reallocation leaves a peak behind.
    let mut body = Vec::with_capacity(vectors * (dims * 12 + 64) + 256);
    body.extend_from_slice(br#"{"object":"list","data":["#);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..vectors {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(br#"{"object":"embedding","index":"#);
        body.extend_from_slice(i.to_string().as_bytes());
        body.extend_from_slice(br#","embedding":["#);
        for d in 0..dims {
            if d > 0 {
                body.push(b',');
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x & 1 == 1 {
                body.push(b'-');
            }
            body.extend_from_slice(b"0.");
            let mut digits = x >> 8;
            for _ in 0..7 + usize::from(x & 6 == 6) {
                body.push(b'0' + (digits % 10) as u8);
                digits /= 10;
            }
        }
        body.extend_from_slice(b"]}");
    }
    body.extend_from_slice(TAIL.as_bytes());
    body.extend_from_slice(
        format!("{prompt_tokens},\"total_tokens\":{prompt_tokens}}}}}").as_bytes(),
    );
    Bytes::from(body)
}

/// A field of `/proc/self/status` in bytes (`VmHWM`, `VmRSS`).
fn proc_status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kb: u64 = line.trim().trim_end_matches("kB").trim().parse().unwrap();
    kb * 1024
}

/// The process's peak RSS, reset first to the current RSS where Linux
/// allows it (`clear_refs` 5), so an earlier peak cannot hide growth.
fn reset_peak_rss() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    proc_status_bytes("VmHWM")
}

/// Nano-dollars spent from a freshly funded $1 wallet.
async fn spent(g: &Gateway, u: &User) -> i64 {
    1_000_000_000 - nanos(&g.balance(u).await.0)
}

async fn post(g: &Gateway, path: &str, key: &str, body: &str) -> reqwest::Response {
    g.http
        .post(format!("{}{path}", g.url))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// Case 9 (M8): a ~68 MB embeddings answer (2,048 vectors of 3,072 floats)
/// is relayed whole and billed by its usage, and the process (gateway,
/// stub and client together) does not grow by the answer's size.
///
/// Why this can fail: the answer exists once before the baseline (the
/// stub's `Bytes`). A gateway that buffered it (to parse it whole, to find
/// `usage`, to compute a `content-length`) would hold a second copy of
/// ~68 MB and the peak would rise by at least that much; the client here
/// counts and compares its chunks without keeping them. What may rise
/// legitimately: socket and hyper buffers, the meter's bounded state, a few
/// chunks in flight, allocator slack: a few MB, well below the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_68_mb_answer_is_relayed_and_billed_in_bounded_memory() {
    let _serial = SERIAL.lock().await;
    const GROWTH_BOUND: u64 = 24 << 20;
    let body = embeddings_answer(2048, 3072, 2048);
    assert!(body.len() > 60_000_000, "{} bytes", body.len());
    let url = stub(trickled(&body, 1000, Duration::ZERO)).await.url;
    let g = spawn_gateway_with(|c| c.upstream_url = url).await;
    let (u, key) = g.funded("huge@example.com", "1").await;

    let started = Instant::now();
    let before = reset_peak_rss();
    let r = post(
        &g,
        "/v1/embeddings",
        &key,
        r#"{"model":"text-embedding-3-small","input":"x"}"#,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut stream = r.bytes_stream();
    let mut got = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        let end = got + chunk.len();
        assert!(end <= body.len(), "more bytes than the upstream sent");
        assert!(chunk[..] == body[got..end], "bytes differ at {got}");
        got = end;
    }
    let after = proc_status_bytes("VmHWM");
    assert_eq!(got, body.len(), "every byte relayed");
    let growth = after.saturating_sub(before);
    eprintln!(
        "relayed {} bytes in {:?}; peak RSS {} -> {} (+{} KiB)",
        body.len(),
        started.elapsed(),
        before,
        after,
        growth >> 10
    );
    assert!(
        growth < GROWTH_BOUND,
        "peak RSS grew by {growth} bytes relaying a {} byte answer: buffered?",
        body.len()
    );

    // text-embedding-3-small: $0.02 a million input tokens = 20 nanos each.
    wait_until("the answer is billed", || async {
        spent(&g, &u).await == 2048 * 20
    })
    .await;
    assert_eq!(g.reconcile().await["ok"], true);
}

fn chat_answer() -> Bytes {
    Bytes::from_static(
        br#"{"id":"c1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Slow but steady wins the race, one piece at a time."},"finish_reason":"stop"}],"usage":{"prompt_tokens":500,"completion_tokens":300,"total_tokens":800}}"#,
    )
}

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello!"}]}"#;

/// M8: the read timeout bounds each read, not the answer: 20 pieces 50 ms
/// apart (a second in all) under a 300 ms read timeout pass whole, billed.
#[tokio::test]
async fn a_slow_answer_within_the_read_timeout_passes_and_is_billed() {
    let _serial = SERIAL.lock().await;
    let body = chat_answer();
    let url = stub(trickled(&body, 20, Duration::from_millis(50)))
        .await
        .url;
    let g = spawn_gateway_with(|c| {
        c.upstream_url = url;
        c.upstream_read_timeout = Duration::from_millis(300);
    })
    .await;
    let (u, key) = g.funded("slow@example.com", "1").await;
    let started = Instant::now();
    let r = post(&g, "/v1/chat/completions", &key, CHAT).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), body);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the answer was trickled"
    );
    let want = mini_cost(500, 0, 300);
    wait_until("the slow answer is billed", || async {
        spent(&g, &u).await == want
    })
    .await;
    assert_eq!(g.reconcile().await["ok"], true);
}

/// M8, U4: a read that stalls past the read timeout cuts the answer: the
/// client sees an error mid-body, and nothing is billed (though the usage
/// had already passed) and the hold is released.
#[tokio::test]
async fn an_answer_stalled_past_the_read_timeout_is_cut_and_not_billed() {
    let _serial = SERIAL.lock().await;
    let body = Bytes::from_static(
        br#"{"usage":{"prompt_tokens":500,"completion_tokens":300},"id":"c1","choices":[{"index":0,"message":{"role":"assistant","content":"Half an answer and then"#,
    );
    let steps = vec![
        Step::Send(json_head(body.len() + 100)),
        Step::Send(body.slice(..60)),
        Step::Sleep(Duration::from_millis(50)),
        Step::Send(body.slice(60..)),
        Step::Hang,
    ];
    let url = stub(steps).await.url;
    let g = spawn_gateway_with(|c| {
        c.upstream_url = url;
        c.upstream_read_timeout = Duration::from_millis(300);
    })
    .await;
    let (u, key) = g.funded("stalled@example.com", "1").await;
    let before = g.balance(&u).await;
    let r = post(&g, "/v1/chat/completions", &key, CHAT).await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut stream = r.bytes_stream();
    let mut got = Vec::new();
    let failed = loop {
        match stream.next().await {
            Some(Ok(chunk)) => got.extend_from_slice(&chunk),
            Some(Err(_)) => break true,
            None => break false,
        }
    };
    assert!(failed, "the cut answer ends in an error, not a clean end");
    assert!(body.starts_with(&got), "what arrived is the answer's start");
    wait_until("the hold is released", || async {
        g.reconcile().await["holds_total"] == "0.00"
    })
    .await;
    assert_eq!(g.balance(&u).await, before, "a cut answer is not billed");
    assert_eq!(g.reconcile().await["ok"], true);
}
