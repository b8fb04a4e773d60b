//! Metering real traffic (SPEC M1-M11, P6b): the shapes real clients and
//! upstreams send, each through real sockets. The upstream is a tiny stub
//! that records the request's exact bytes and answers with exact bytes,
//! so what the gateway forwards and how it bills are both checked to the
//! byte and to the nano-dollar.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/stub.rs"]
mod stub;

use std::time::Duration;

use async_compression::tokio::write::{BrotliEncoder, GzipEncoder, ZlibEncoder, ZstdEncoder};
use common::*;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use stub::{send, stub, Step, Stub};
use tokio::io::AsyncWriteExt;
use tollgate::store::RequestStatus;
use tollgate::wallet::user_wallet_id;

/// A whole HTTP/1.1 answer with `content-length`.
fn http(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nconnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The head of an SSE answer read to the connection's close.
fn sse_head() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n".to_vec()
}

fn chat_json(prompt: u64, completion: u64) -> Vec<u8> {
    format!(
        r#"{{"id":"c1","object":"chat.completion","model":"gpt-4o-mini","choices":[{{"index":0,"message":{{"role":"assistant","content":"Hi"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}}}}}"#,
        prompt + completion
    )
    .into_bytes()
}

async fn gateway_on(stub: &Stub) -> Gateway {
    let url = stub.url.clone();
    spawn_gateway_with(|c| c.upstream_url = url).await
}

async fn post_raw(
    g: &Gateway,
    path: &str,
    key: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut r = g
        .http
        .post(format!("{}{path}", g.url))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

/// Nano-dollars spent from a freshly funded $1 wallet, once settled.
async fn spent(g: &Gateway, u: &User) -> i64 {
    1_000_000_000 - nanos(&g.balance(u).await.0)
}

/// A request without `max_tokens`: the model's 16,384 bound the output.
fn open_chat() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello!"}]})
}

/// The usage facts of the wallet's first settlement, once flushed.
async fn settled_facts(g: &Gateway, u: &User) -> tollgate::store::UsageFacts {
    let wallet = user_wallet_id(&u.id);
    wait_until("the settlement is in the ledger", || async {
        let l = g.store.ledger(&wallet).await.unwrap();
        l.iter().any(|e| e.usage.is_some())
    })
    .await;
    let ledger = g.store.ledger(&wallet).await.unwrap();
    ledger.into_iter().find_map(|e| e.usage).unwrap()
}

async fn encode(coding: &str, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            let mut e = GzipEncoder::new(&mut out);
            e.write_all(plain).await.unwrap();
            e.shutdown().await.unwrap();
        }
        "deflate" => {
            let mut e = ZlibEncoder::new(&mut out);
            e.write_all(plain).await.unwrap();
            e.shutdown().await.unwrap();
        }
        "br" => {
            let mut e = BrotliEncoder::new(&mut out);
            e.write_all(plain).await.unwrap();
            e.shutdown().await.unwrap();
        }
        "zstd" => {
            let mut e = ZstdEncoder::new(&mut out);
            e.write_all(plain).await.unwrap();
            e.shutdown().await.unwrap();
        }
        other => panic!("no encoder for {other}"),
    }
    out
}

/// Case 1 and the rest of M1: the upstream is asked for identity; an
/// answer compressed anyway is decoded, billed exactly, and reaches the
/// client plain, for every coding.
#[tokio::test]
async fn compressed_answers_are_decoded_before_metering() {
    for coding in ["gzip", "deflate", "br", "zstd"] {
        let plain = chat_json(1000, 500);
        let body = encode(coding, &plain).await;
        let s = stub(vec![send(http(
            "200 OK",
            &[
                ("content-type", "application/json"),
                ("content-encoding", coding),
            ],
            &body,
        ))])
        .await;
        let g = gateway_on(&s).await;
        let (u, key) = g.funded(&format!("{coding}@example.com"), "1").await;
        let r = g
            .chat(&key, &open_chat(), &[("accept-encoding", "gzip, deflate")])
            .await;
        assert_eq!(r.status(), StatusCode::OK, "{coding}");
        assert!(r.headers().get("content-encoding").is_none(), "{coding}");
        assert_eq!(
            r.bytes().await.unwrap(),
            plain,
            "{coding}: the client gets plain JSON"
        );
        // gpt-4o-mini: 1000 x 0.15/M + 500 x 0.60/M = $0.00045, exactly.
        assert_eq!(spent(&g, &u).await, mini_cost(1000, 0, 500), "{coding}");
        assert_eq!(mini_cost(1000, 0, 500), 450_000);
        let head = s.last_head();
        assert!(head.contains("\r\naccept-encoding: identity"), "{head}");
        assert!(!head.contains("gzip"), "{head}");
    }
}

/// A coding the gateway cannot read is an upstream failure: not billed.
#[tokio::test]
async fn an_unreadable_coding_is_a_bad_gateway_and_not_billed() {
    let s = stub(vec![send(http(
        "200 OK",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "compress"),
        ],
        b"\x1f\x9d garbage",
    ))])
    .await;
    let g = gateway_on(&s).await;
    let (u, key) = g.funded("lzw@example.com", "1").await;
    let r = g.chat(&key, &chat_body("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(spent(&g, &u).await, 0);
    assert_eq!(g.reconcile().await["holds_total"], "0.00");
}

/// Case 2 (M10): the gateway inserts `stream_options`, and every other
/// byte reaches the upstream as the client wrote it.
#[tokio::test]
async fn the_request_body_is_edited_by_insertion_only() {
    let s = stub(vec![
        send(sse_head()),
        send(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n".to_vec()),
    ])
    .await;
    let g = gateway_on(&s).await;
    let (_u, key) = g.funded("order@example.com", "1").await;
    let body = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"caf\u00e9 \ud83d\ude00"}],"temperature":1.0e0,"response_format":{"type":"json_schema","json_schema":{"name":"fruit","schema":{"type":"object","properties":{"zebra":{"type":"number"},"apple":{"type":"string"},"mango":{"type":"integer"}}}}}}"#;
    let r = post_raw(&g, "/v1/chat/completions", &key, body, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let _ = r.bytes().await.unwrap();
    let sent = String::from_utf8(s.last_body()).unwrap();
    let added = r#","stream_options":{"include_usage":true}"#;
    assert!(sent.contains(added), "{sent}");
    assert_eq!(sent.replacen(added, "", 1), body);
}

/// Case 3 and the rest of M2: counts read one by one.
#[tokio::test]
async fn usage_counts_are_read_one_by_one() {
    // Embeddings with only `total_tokens`: it is the input.
    let s = stub(vec![send(http(
        "200 OK",
        &[("content-type", "application/json")],
        br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2]}],"model":"text-embedding-3-small","usage":{"total_tokens":9}}"#,
    ))])
    .await;
    let g = gateway_on(&s).await;
    let (u, key) = g.funded("emb@example.com", "1").await;
    let r = post_raw(
        &g,
        "/v1/embeddings",
        &key,
        r#"{"model":"text-embedding-3-small","input":"hello"}"#,
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let _ = r.bytes().await.unwrap();
    // 9 input tokens x 0.02 per million = 180 nano-dollars.
    assert_eq!(spent(&g, &u).await, 180);

    // A null count beside others is 0; a negative one is 0.
    let s = stub(vec![send(http(
        "200 OK",
        &[("content-type", "application/json")],
        br#"{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":40,"completion_tokens":null,"total_tokens":-3}}"#,
    ))])
    .await;
    let g = gateway_on(&s).await;
    let (u, key) = g.funded("null@example.com", "1").await;
    let r = g.chat(&key, &chat_body("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let _ = r.bytes().await.unwrap();
    assert_eq!(spent(&g, &u).await, mini_cost(40, 0, 0));
}

fn tool_call_chunk(args: &str) -> String {
    format!(
        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":0,\"function\":{{\"arguments\":{}}}}}]}}}}]}}\n\n",
        serde_json::to_string(args).unwrap()
    )
}

/// Case 4 (M4, U4a): a stream the client drops after 1,200 bytes of
/// tool-call arguments and no text is billed 300 output tokens.
#[tokio::test]
async fn a_dropped_stream_of_tool_calls_is_billed_by_its_arguments() {
    let mut steps = vec![send(sse_head())];
    for _ in 0..12 {
        steps.push(send(tool_call_chunk(&"a".repeat(100)).into_bytes()));
    }
    steps.push(Step::Hang);
    let s = stub(steps).await;
    let g = gateway_on(&s).await;
    let (u, key) = g.funded("tools@example.com", "1").await;
    let body = json!({"model": "gpt-4o-mini", "stream": true, "max_tokens": 1000,
        "messages": [{"role": "user", "content": "Hello!"}]});
    let r = g.chat(&key, &body, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut stream = r.bytes_stream();
    let mut got = Vec::new();
    while got.windows(10).filter(|w| *w == b"tool_calls").count() < 12 {
        match stream.next().await {
            Some(part) => got.extend_from_slice(&part.unwrap()),
            None => panic!("stream ended early: {}", String::from_utf8_lossy(&got)),
        }
    }
    drop(stream);
    // "Hello!" is 6 bytes: 2 prompt tokens; 1,200 bytes of arguments: 300.
    let want = mini_cost(2, 0, 300);
    wait_until("the dropped stream is billed", || async {
        spent(&g, &u).await == want
    })
    .await;
    let facts = settled_facts(&g, &u).await;
    assert_eq!(facts.status, RequestStatus::Cancelled);
    assert_eq!(facts.usage.output_tokens, 300);
}

/// Case 5 and M11: a usage event split over two `data:` lines, and every
/// line ending (LF, CRLF, CR alone), billed from the joined data.
#[tokio::test]
async fn sse_events_are_framed_by_the_whatwg_rules() {
    let events = [
        "data: {\"choices\":[],\ndata: \"usage\":{\"prompt_tokens\":10,\"completion_tokens\":20}}\n\ndata: [DONE]\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":20}}\r\n\r\ndata: [DONE]\r\n\r\n",
        ": keep-alive\r\rdata: {\"choices\":[],\rdata: \"usage\":{\"prompt_tokens\":10,\"completion_tokens\":20}}\r\rdata: [DONE]\r\r",
    ];
    for text in events {
        let s = stub(vec![send(sse_head()), send(text.as_bytes().to_vec())]).await;
        let g = gateway_on(&s).await;
        let (u, key) = g.funded("sse@example.com", "1").await;
        let body = json!({"model": "gpt-4o-mini", "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "Hi"}]});
        let r = g.chat(&key, &body, &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        let got = r.bytes().await.unwrap();
        assert_eq!(got, text.as_bytes(), "passed through unchanged: {text:?}");
        assert_eq!(spent(&g, &u).await, mini_cost(10, 0, 20), "{text:?}");
    }
}

/// Case 6 and M5: a 200 stream that carries an error event, and a 200
/// JSON body that is an error object, are not billed; holds released.
#[tokio::test]
async fn in_band_errors_are_not_billed() {
    let s = stub(vec![
        send(sse_head()),
        send(
            b"data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n"
                .to_vec(),
        ),
    ])
    .await;
    let g = gateway_on(&s).await;
    let (u, key) = g.funded("err@example.com", "1").await;
    let body = json!({"model": "gpt-4o-mini", "stream": true,
        "messages": [{"role": "user", "content": "Hi"}]});
    let r = g.chat(&key, &body, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    // The error event reaches the client, then the stream is cut.
    let mut stream = r.bytes_stream();
    let mut got = Vec::new();
    let mut cut = false;
    while let Some(part) = stream.next().await {
        match part {
            Ok(b) => got.extend_from_slice(&b),
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    assert!(String::from_utf8_lossy(&got).contains("overloaded"));
    assert!(cut, "a stream that breaks off into an error is cut");
    assert_eq!(spent(&g, &u).await, 0);
    assert_eq!(g.reconcile().await["holds_total"], "0.00");

    let s = stub(vec![send(http(
        "200 OK",
        &[("content-type", "application/json")],
        br#"{"error":{"message":"The server had an error","type":"server_error","code":null}}"#,
    ))])
    .await;
    let g = gateway_on(&s).await;
    let (u, key) = g.funded("err2@example.com", "1").await;
    let r = g.chat(&key, &chat_body("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let _ = r.bytes().await.unwrap();
    assert_eq!(spent(&g, &u).await, 0);
    assert_eq!(g.reconcile().await["holds_total"], "0.00");
}

/// Case 7 (M6): an absurd `max_tokens` is clamped to the model's maximum
/// in the hold, so it does not lock the wallet; the request is forwarded
/// unchanged.
#[tokio::test]
async fn max_tokens_is_clamped_to_the_model_in_the_hold() {
    let s = stub(vec![
        Step::Sleep(Duration::from_millis(300)),
        send(http(
            "200 OK",
            &[("content-type", "application/json")],
            &chat_json(10, 5),
        )),
    ])
    .await;
    let g = gateway_on(&s).await;
    let (u, key) = g.funded("big@example.com", "1").await;
    let big = json!({"model": "gpt-4o-mini", "max_tokens": 1_000_000_000_000u64,
        "messages": [{"role": "user", "content": "Hello!"}]});
    let normal = chat_body("gpt-4o-mini");
    let (a, b) = tokio::join!(g.chat(&key, &big, &[]), g.chat(&key, &normal, &[]));
    assert_eq!(a.status(), StatusCode::OK);
    assert_eq!(b.status(), StatusCode::OK);
    let _ = (a.bytes().await, b.bytes().await);
    assert!(String::from_utf8(s.requests()[0].clone())
        .unwrap()
        .contains("1000000000000"));
    assert_eq!(spent(&g, &u).await, 2 * mini_cost(10, 0, 5));
}

/// Case 8 (M9): a non-streamed call whose client leaves before the answer
/// is still billed by the answer's usage, recorded `client_closed`.
#[tokio::test]
async fn a_client_that_leaves_a_non_streamed_call_is_billed_by_its_usage() {
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n";
    let start = b"{\"choices\":[{\"message\":{\"content\":\"";
    let end = b"Hi\"}}],\"usage\":{\"prompt_tokens\":500,\"completion_tokens\":300}}";
    let whole = [&head[..], &start[..], &end[..]].concat();
    let scripts = [
        // The case as handed: nothing at all before the client leaves.
        vec![Step::Sleep(Duration::from_millis(2000)), send(whole)],
        // The client leaves mid-body.
        vec![
            Step::Sleep(Duration::from_millis(100)),
            send([&head[..], &start[..]].concat()),
            Step::Sleep(Duration::from_millis(1900)),
            send(end.to_vec()),
        ],
    ];
    for script in scripts {
        let s = stub(script).await;
        let g = gateway_on(&s).await;
        let (u, key) = g.funded("leaver@example.com", "1").await;
        let body = open_chat();
        let call = g.chat(&key, &body, &[]);
        let r = tokio::time::timeout(Duration::from_millis(500), async {
            let r = call.await;
            r.bytes().await
        })
        .await;
        assert!(r.is_err(), "the client left before the answer ended");
        let want = mini_cost(500, 0, 300);
        wait_until("the abandoned answer is billed", || async {
            spent(&g, &u).await == want
        })
        .await;
        let facts = settled_facts(&g, &u).await;
        assert_eq!(facts.status, RequestStatus::ClientClosed);
        assert_eq!(
            (facts.usage.input_tokens, facts.usage.output_tokens),
            (500, 300)
        );
        assert_eq!(g.reconcile().await["ok"], true);
    }
}

/// Case 10 (M3): counts past what the request could produce are clamped
/// (output to its `max_tokens`), counted in a metric, and never wrap.
#[tokio::test]
async fn impossible_counts_are_clamped_to_the_request() {
    let clamped = |text: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("tollgate_meter_usage_clamped_total{route=\"chat\"} "))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    let mut before = 0;
    for (completion, total) in [
        ("4294967295", "4294967305"),
        ("18446744073709551615", "18446744073709551615"),
    ] {
        let body = format!(
            r#"{{"choices":[{{"message":{{"content":"ok"}}}}],"usage":{{"prompt_tokens":10,"completion_tokens":{completion},"total_tokens":{total}}}}}"#
        );
        let s = stub(vec![send(http(
            "200 OK",
            &[("content-type", "application/json")],
            body.as_bytes(),
        ))])
        .await;
        let g = gateway_on(&s).await;
        let (u, key) = g.funded("huge@example.com", "1").await;
        let req = json!({"model": "gpt-4o-mini", "max_tokens": 16,
            "messages": [{"role": "user", "content": "Hello!"}]});
        let r = g.chat(&key, &req, &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        let _ = r.bytes().await.unwrap();
        assert_eq!(spent(&g, &u).await, mini_cost(10, 0, 16), "{completion}");
        assert_eq!(g.reconcile().await["ok"], true);
        let usage: Value = g
            .get(
                &format!("/api/keys/{}/usage", key_id(&g, &u).await),
                Some(&u.token),
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(usage["output_tokens"], 16);
        assert_eq!(usage["total_tokens"], 26);
        let text = reqwest::get(format!("http://{}/metrics", g.running.metrics_addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // Metrics are per process: other tests may clamp too.
        assert!(clamped(&text) > before, "{text}");
        before = clamped(&text);
    }
}

async fn key_id(g: &Gateway, u: &User) -> String {
    let keys: Value = g
        .get("/api/keys", Some(&u.token))
        .await
        .json()
        .await
        .unwrap();
    keys[0]["id"].as_str().unwrap().to_string()
}

/// Case 11 (P6b): the key from `x-api-key` or `api-key`; no header that
/// carries it reaches the upstream.
#[tokio::test]
async fn keys_are_taken_from_azure_and_x_api_key_headers_and_never_forwarded() {
    let s = stub(vec![send(http(
        "200 OK",
        &[("content-type", "application/json")],
        &chat_json(5, 5),
    ))])
    .await;
    let g = gateway_on(&s).await;
    let (u, key) = g.funded("xkey@example.com", "1").await;
    for header in ["x-api-key", "api-key"] {
        let r = g
            .http
            .post(format!("{}/v1/chat/completions", g.url))
            .header(header, &key)
            .header("x-echo", format!("Bearer {key}"))
            .json(&chat_body("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{header}");
        let _ = r.bytes().await.unwrap();
        let head = s.last_head();
        assert!(!head.contains(&key.to_ascii_lowercase()), "{head}");
        assert!(!head.contains("x-api-key"), "{head}");
        assert!(!head.contains("\r\napi-key"), "{head}");
        assert!(!head.contains("x-echo"), "{head}");
    }
    assert_eq!(spent(&g, &u).await, 2 * mini_cost(5, 0, 5));
    // A wrong key in x-api-key is refused like any other.
    let r = g
        .http
        .post(format!("{}/v1/chat/completions", g.url))
        .header("x-api-key", "tg_not_a_key")
        .json(&chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// M7: a request with an image part holds for the context window, so
/// concurrent multimodal calls cannot take a wallet past the threshold by
/// more than one call (B6): each real cost fits its hold.
#[tokio::test]
async fn multimodal_input_is_held_at_the_context_window() {
    // 100,000 prompt tokens: far more than the body's bytes.
    let s = stub(vec![send(http(
        "200 OK",
        &[("content-type", "application/json")],
        &chat_json(100_000, 10),
    ))])
    .await;
    let g = gateway_on(&s).await;
    let (u, key) = g.funded("img@example.com", "0.20").await;
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]});
    let calls = (0..30).map(|_| g.chat(&key, &body, &[]));
    let answers = futures_util::future::join_all(calls).await;
    let ok = answers
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .count();
    assert!(ok >= 1);
    let balance = nanos(&g.balance(&u).await.0);
    // Each call costs 100,000 x 150 + 10 x 600 = $0.015006; the threshold
    // is $0.05: the wallet never ends below it by more than one call.
    assert!(
        balance > 50_000_000 - mini_cost(100_000, 0, 10),
        "balance {balance}"
    );
    assert_eq!(g.reconcile().await["ok"], true);
}

/// M8: a large non-streamed answer passes through whole (here a few MB;
/// the memory bound is in `tests/metering_memory.rs`).
#[tokio::test]
async fn large_answers_are_relayed_whole_and_billed() {
    let mut body = br#"{"object":"list","data":["#.to_vec();
    for i in 0..200 {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(br#"{"object":"embedding","index":0,"embedding":["#);
        body.extend_from_slice(&b"-0.0123456789,".repeat(1500));
        body.extend_from_slice(b"0.5]}");
    }
    body.extend_from_slice(
        br#"],"model":"text-embedding-3-small","usage":{"prompt_tokens":77,"total_tokens":77}}"#,
    );
    let s = stub(vec![send(http(
        "200 OK",
        &[("content-type", "application/json")],
        &body,
    ))])
    .await;
    let g = gateway_on(&s).await;
    let (u, key) = g.funded("bigbody@example.com", "1").await;
    let r = post_raw(
        &g,
        "/v1/embeddings",
        &key,
        r#"{"model":"text-embedding-3-small","input":"x"}"#,
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), body);
    assert_eq!(spent(&g, &u).await, 77 * 20);
}

fn ok_json(body: &[u8]) -> Vec<u8> {
    http("200 OK", &[("content-type", "application/json")], body)
}

/// M3: a prompt count past every bound, on a model whose pricing sets no
/// context window, is clamped to the gateway's default window (128,000):
/// no count bills without bound, and conservation holds with the largest
/// counts, two at a time.
#[tokio::test]
async fn prompt_counts_are_bounded_by_the_default_context_window() {
    let s = stub(vec![send(ok_json(
        br#"{"choices":[{"message":{"content":"ok"}}],"usage":{"prompt_tokens":4294967295,"completion_tokens":1,"total_tokens":4294967296}}"#,
    ))])
    .await;
    let g = gateway_on(&s).await;
    let (u, key) = g.funded("window@example.com", "1").await;
    let r = g.chat(&key, &chat_body("gpt-4o"), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let _ = r.bytes().await.unwrap();
    // gpt-4o: 2.50 in, 10.00 out per million: 128,000 x 2,500 + 1 x 10,000.
    assert_eq!(spent(&g, &u).await, 128_000 * 2_500 + 10_000);

    let s = stub(vec![send(ok_json(
        br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":18446744073709551615,"total_tokens":18446744073709551615}}"#,
    ))])
    .await;
    let g = gateway_on(&s).await;
    let (u, key) = g.funded("u64max@example.com", "1").await;
    let body = r#"{"model":"text-embedding-3-small","input":"hello"}"#;
    let (a, b) = tokio::join!(
        post_raw(&g, "/v1/embeddings", &key, body, &[]),
        post_raw(&g, "/v1/embeddings", &key, body, &[])
    );
    let _ = (a.bytes().await, b.bytes().await);
    // 128,000 x 20 nano-dollars each.
    assert_eq!(spent(&g, &u).await, 2 * 128_000 * 20);
    assert_eq!(g.reconcile().await["ok"], true);
}

/// M6: a limit of 0 is unset (SGLang and vLLM generate unbounded), and
/// with both limits set the larger bounds the bill.
#[tokio::test]
async fn a_zero_output_limit_is_unset_and_the_larger_limit_bounds() {
    let s = stub(vec![send(ok_json(&chat_json(10, 1000)))]).await;
    let g = gateway_on(&s).await;
    let (u, key) = g.funded("zero@example.com", "1").await;
    let body = json!({"model": "gpt-4o-mini", "max_completion_tokens": 0, "max_tokens": 1000,
        "messages": [{"role": "user", "content": "Hello!"}]});
    let r = g.chat(&key, &body, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let _ = r.bytes().await.unwrap();
    assert_eq!(spent(&g, &u).await, mini_cost(10, 0, 1000));
}

/// M5: an error body whose `choices` is null (a Go nil slice) is an error
/// object without choices: not billed.
#[tokio::test]
async fn an_error_body_with_null_choices_is_not_billed() {
    let s = stub(vec![send(ok_json(
        br#"{"id":"","object":"","created":0,"model":"","choices":null,"error":{"message":"upstream overloaded","type":"server_error"}}"#,
    ))])
    .await;
    let g = gateway_on(&s).await;
    let (u, key) = g.funded("nullchoices@example.com", "1").await;
    let r = g.chat(&key, &chat_body("gpt-4o-mini"), &[]).await;
    let _ = r.bytes().await.unwrap();
    wait_until("the hold is released", || async {
        g.reconcile().await["holds_total"] == "0.00"
    })
    .await;
    assert_eq!(spent(&g, &u).await, 0);
}

/// M1: a gzip answer in two members (RFC 1952 allows it) is read whole.
#[tokio::test]
async fn a_gzip_answer_in_several_members_is_read_whole() {
    let plain = chat_json(1000, 500);
    let (a, b) = plain.split_at(40);
    let mut body = encode("gzip", a).await;
    body.extend(encode("gzip", b).await);
    let s = stub(vec![send(http(
        "200 OK",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        &body,
    ))])
    .await;
    let g = gateway_on(&s).await;
    let (u, key) = g.funded("members@example.com", "1").await;
    let r = g.chat(&key, &open_chat(), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), plain);
    assert_eq!(spent(&g, &u).await, mini_cost(1000, 0, 500));
}

/// U4a: a stream the client cancels before the upstream's first byte is
/// billed the prompt's estimate (the upstream read the prompt).
#[tokio::test]
async fn a_stream_cancelled_before_the_answer_bills_the_prompt() {
    let s = stub(vec![
        Step::Sleep(Duration::from_millis(1500)),
        send(sse_head()),
    ])
    .await;
    let g = gateway_on(&s).await;
    let (u, key) = g.funded("early@example.com", "1").await;
    let body = json!({"model": "gpt-4o-mini", "stream": true,
        "messages": [{"role": "user", "content": "Hello!"}]});
    let r = tokio::time::timeout(Duration::from_millis(300), g.chat(&key, &body, &[])).await;
    assert!(r.is_err(), "the client left before the answer");
    // "Hello!": 6 bytes, 2 tokens.
    let want = mini_cost(2, 0, 0);
    wait_until("the prompt is billed", || async {
        spent(&g, &u).await == want
    })
    .await;
    assert_eq!(settled_facts(&g, &u).await.status, RequestStatus::Cancelled);
}

/// M2 with M3: a total-only count on a generating route: what the output
/// bound cannot hold is billed as input, not dropped.
#[tokio::test]
async fn a_total_only_count_keeps_what_the_output_bound_cannot_hold() {
    let s = stub(vec![send(ok_json(
        br#"{"choices":[{"message":{"content":"ok"}}],"usage":{"total_tokens":2000}}"#,
    ))])
    .await;
    let g = gateway_on(&s).await;
    let (u, key) = g.funded("total@example.com", "1").await;
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 16,
        "messages": [{"role": "user", "content": "Hello!"}]});
    let r = g.chat(&key, &body, &[]).await;
    let _ = r.bytes().await.unwrap();
    assert_eq!(spent(&g, &u).await, mini_cost(1984, 0, 16));
}

/// M7: an assistant turn that refers to an earlier audio answer is
/// non-text input: held at the context window, so B6 holds.
#[tokio::test]
async fn an_audio_turn_is_held_at_the_context_window() {
    let s = stub(vec![send(ok_json(&chat_json(100_000, 10)))]).await;
    let g = gateway_on(&s).await;
    let (u, key) = g.funded("audio@example.com", "0.20").await;
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [
        {"role": "user", "content": "Say hi"},
        {"role": "assistant", "audio": {"id": "audio_abc123"}},
        {"role": "user", "content": "Again"}]});
    let calls = (0..30).map(|_| g.chat(&key, &body, &[]));
    for a in futures_util::future::join_all(calls).await {
        let _ = a.bytes().await;
    }
    let balance = nanos(&g.balance(&u).await.0);
    assert!(
        balance > 50_000_000 - mini_cost(100_000, 0, 10),
        "balance {balance}"
    );
}
