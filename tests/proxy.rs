//! The proxy end to end through real sockets: gateway on port 0, the mock
//! upstream on port 0 (P1-P6, B1, B2, B3, B5, B6, K4, K5, U4).

// Tests may panic on unexpected errors: that is how they fail.
#![allow(clippy::unwrap_used)]

#[path = "common/calls.rs"]
mod calls;
mod common;

use std::sync::Arc;
use std::time::Duration;

use calls::*;
use common::*;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn tokens(prompt: i64, cached: i64, output: i64) -> Vec<(&'static str, String)> {
    vec![
        ("x-mock-prompt-tokens", prompt.to_string()),
        ("x-mock-cached-tokens", cached.to_string()),
        ("x-mock-completion-tokens", output.to_string()),
    ]
}

fn knobs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, s)| (*k, s.as_str())).collect()
}

#[tokio::test]
async fn json_call_is_billed_exactly_with_cached_tokens() {
    let g = spawn_gateway().await;
    let (u, key) = g.funded("a@example.com", "10").await;
    let t = tokens(1219, 1024, 10);
    let r = g.chat(&key, &chat_body("gpt-4o-mini"), &knobs(&t)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("x-request-id").is_some());
    let body: Value = r.json().await.unwrap();
    // The OpenAI shape reaches the client unchanged.
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["usage"]["prompt_tokens"], 1219);
    assert_eq!(
        body["usage"]["prompt_tokens_details"]["cached_tokens"],
        1024
    );
    let cost = mini_cost(1219, 1024, 10);
    assert_eq!(g.balance(&u).await.0, usd(10_000_000_000 - cost));
}

#[tokio::test]
async fn promo_is_spent_before_paid() {
    let g = spawn_gateway().await;
    let (u, key) = g.funded("p@example.com", "1").await;
    g.deposit(&u, "0.0001", "promo").await;
    // 1000 output tokens x 600 nanos = 0.0006: 0.0001 from promo, 0.0005 from paid.
    let t = tokens(0, 0, 1000);
    let r = g.chat(&key, &chat_body("gpt-4o-mini"), &knobs(&t)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (paid, promo) = g.balance(&u).await;
    assert_eq!(promo, "0.00");
    assert_eq!(paid, usd(1_000_000_000 - 500_000));
}

#[tokio::test]
async fn threshold_is_inclusive_and_a_deposit_lifts_it_at_once() {
    let g = spawn_gateway().await;
    let (u, key) = g.funded("t@example.com", "0.05").await;
    let r = g.chat(&key, &chat_body("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(error_code(r).await, "insufficient_balance");
    assert_eq!(g.me(&u).await["suspended"], true);
    assert_eq!(g.mock.upstream.request_count(), 0);

    g.deposit(&u, "0.001", "stripe").await;
    let r = g.chat(&key, &chat_body("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn spending_down_to_the_threshold_suspends_the_key() {
    let g = spawn_gateway().await;
    // 0.0506: one call of 1000 output tokens (0.0006) lands exactly on 0.05.
    let (u, key) = g.funded("s@example.com", "0.0506").await;
    let t = tokens(0, 0, 1000);
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1000});
    assert_eq!(
        g.chat(&key, &body, &knobs(&t)).await.status(),
        StatusCode::OK
    );
    assert_eq!(g.balance(&u).await.0, "0.05");
    assert_eq!(
        g.chat(&key, &body, &knobs(&t)).await.status(),
        StatusCode::PAYMENT_REQUIRED
    );
    assert_eq!(g.me(&u).await["suspended"], true);
}

#[tokio::test]
async fn concurrent_requests_conserve_money_and_stop_near_the_threshold() {
    let g = Arc::new(spawn_gateway().await);
    let (u, key) = g.funded("c@example.com", "1.00").await;
    // gpt-4o: 3000 output tokens x 10,000 nanos = $0.03 a call.
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3000});
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (g, key, body) = (g.clone(), key.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            g.chat(
                &key,
                &body,
                &[
                    ("x-mock-completion-tokens", "3000"),
                    ("x-mock-prompt-tokens", "0"),
                ],
            )
            .await
            .status()
        }));
    }
    let mut ok = 0i64;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::PAYMENT_REQUIRED => {}
            s => panic!("unexpected status {s}"),
        }
    }
    let per_call = 30_000_000i64;
    assert!(ok > 0 && ok < 64, "ok = {ok}");
    let balance = 1_000_000_000 - ok * per_call;
    assert_eq!(g.balance(&u).await.0, usd(balance));
    // B6: never below the threshold by more than one request's cost.
    assert!(balance >= 50_000_000 - per_call, "balance {balance}");
    let rec = g.reconcile().await;
    assert_eq!(rec["ok"], true);
    assert_eq!(rec["deposits_total"], "1.00");
    assert_eq!(rec["usage_total"], usd(ok * per_call));
    assert_eq!(rec["balances_total"], usd(balance));
    assert_eq!(rec["holds_total"], "0.00");
}

#[tokio::test]
async fn a_deleted_key_is_refused_on_the_very_next_request() {
    let g = spawn_gateway().await;
    let (u, key) = g.funded("d@example.com", "1").await;
    assert_eq!(chat_status(&g, &key, &[]).await, StatusCode::OK);
    let keys = get_json(&g, "/api/keys", &u.token).await;
    let id = keys[0]["id"].as_str().unwrap();
    assert_eq!(
        delete_status(&g, &format!("/api/keys/{id}"), Some(&u.token)).await,
        StatusCode::NO_CONTENT
    );
    let r = g.chat(&key, &chat_body("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(r).await, "invalid_api_key");
    let keys = get_json(&g, "/api/keys", &u.token).await;
    assert_eq!(keys[0]["status"], "deleted");
}

#[tokio::test]
async fn an_archived_key_gets_key_archived() {
    let g = spawn_gateway().await;
    let (u, key) = g.funded("ar@example.com", "1").await;
    assert_eq!(chat_status(&g, &key, &[]).await, StatusCode::OK);
    // Archival arrives with teams; drive the store and the cache as it will.
    let rec = g.store.keys_of_user(&u.id).await.unwrap().remove(0);
    g.store
        .set_key_status(&rec.id, tollgate::store::KeyStatus::Archived)
        .await
        .unwrap();
    g.running.app.keys.invalidate(&rec.hash);
    let r = g.chat(&key, &chat_body("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(r).await, "key_archived");
}

#[tokio::test]
async fn unknown_and_missing_keys_get_401_in_openai_shape() {
    let g = spawn_gateway().await;
    for auth in [Some("tgk_nope"), Some(""), None] {
        let mut r = g
            .http
            .post(format!("{}/v1/chat/completions", g.url))
            .json(&chat_body("gpt-4o-mini"));
        if let Some(a) = auth {
            r = r.header("authorization", format!("Bearer {a}"));
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "invalid_api_key");
        assert_eq!(e["error"]["type"], "invalid_request_error");
        assert!(e["error"]["message"].is_string());
    }
    assert_eq!(g.mock.upstream.request_count(), 0);
}

#[tokio::test]
async fn upstream_500_is_502_unbilled_and_the_hold_released() {
    let g = spawn_gateway().await;
    let (u, key) = g.funded("u@example.com", "1").await;
    let r = g
        .chat(&key, &chat_body("gpt-4o-mini"), &[("x-mock-status", "500")])
        .await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(error_code(r).await, "upstream_error");
    assert_eq!(g.balance(&u).await.0, "1.00");
    let rec = g.reconcile().await;
    assert_eq!(rec["holds_total"], "0.00");
    assert_eq!(rec["usage_total"], "0.00");
}

#[tokio::test]
async fn upstream_4xx_passes_through_unbilled() {
    let g = spawn_gateway().await;
    let (u, key) = g.funded("u4@example.com", "1").await;
    let r = g
        .chat(&key, &chat_body("gpt-4o-mini"), &[("x-mock-status", "400")])
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["message"],
        "mock failure"
    );
    assert_eq!(g.balance(&u).await.0, "1.00");
    assert_eq!(g.reconcile().await["holds_total"], "0.00");
}

#[tokio::test]
async fn upstream_timeout_is_504_and_unreachable_is_502() {
    let g = spawn_gateway_with(|c| c.upstream_read_timeout = Duration::from_millis(200)).await;
    let (u, key) = g.funded("to@example.com", "1").await;
    let r = g
        .chat(
            &key,
            &chat_body("gpt-4o-mini"),
            &[("x-mock-delay-ms", "3000")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(error_code(r).await, "upstream_timeout");
    assert_eq!(g.balance(&u).await.0, "1.00");

    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let g = spawn_gateway_with(|c| c.upstream_url = dead).await;
    let (u, key) = g.funded("dead@example.com", "1").await;
    let r = g.chat(&key, &chat_body("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(g.balance(&u).await.0, "1.00");
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_forwarded() {
    let g = spawn_gateway_with(|c| c.max_body_bytes = 1024).await;
    let (u, key) = g.funded("b@example.com", "1").await;
    let big = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x".repeat(2000)}]});
    let r = g.chat(&key, &big, &[]).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(r).await, "request_too_large");

    // Chunked, without a Content-Length: the limit holds while reading.
    let chunks = futures_util::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 512]))),
    );
    let r =
        send(post_as(&g, "/v1/chat/completions", &key).body(reqwest::Body::wrap_stream(chunks)))
            .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let r = send(
        post_as(&g, "/v1/chat/completions", &key)
            .header("content-type", "application/json")
            .body("{\"model\": \"gpt-4o-mini\", "),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "invalid_request");

    let r = g.chat(&key, &chat_body("no-such-model"), &[]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "model_not_found");

    let r = g.chat(&key, &json!({"messages": []}), &[]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    assert_eq!(g.mock.upstream.request_count(), 0);
    assert_eq!(g.balance(&u).await.0, "1.00");
    assert_eq!(g.reconcile().await["holds_total"], "0.00");
}

#[tokio::test]
async fn the_upstream_never_sees_the_client_key() {
    let g = spawn_gateway().await;
    let (_u, key) = g.funded("k@example.com", "1").await;
    let r = send(
        post_as(&g, "/v1/chat/completions", &key)
            .header("connection", "keep-alive, x-private")
            .header("x-private", "hop")
            .header("x-custom", "end-to-end")
            .json(&chat_body("gpt-4o-mini")),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let seen = g.mock.upstream.requests().pop().unwrap();
    let header = |n: &str| {
        seen.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        header("authorization").unwrap(),
        format!("Bearer {UPSTREAM_KEY}")
    );
    assert_eq!(header("x-custom").as_deref(), Some("end-to-end"));
    assert_eq!(header("x-private"), None);
    assert!(seen.headers.iter().all(|(_, v)| !v.contains(&key)));
}

#[tokio::test]
async fn streams_pass_through_and_are_billed_from_the_usage_chunk() {
    let g = spawn_gateway().await;
    let (u, key) = g.funded("st@example.com", "1").await;
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/openai/chat_request_stream.json")).unwrap();
    let t = tokens(19, 0, 7);
    let r = g.chat(&key, &fixture, &knobs(&t)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(content_type(&r).starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    let usage_chunk: Value =
        serde_json::from_str(events[events.len() - 2].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 7);
    // Settled before the last event reached us (B6).
    assert_eq!(
        g.balance(&u).await.0,
        usd(1_000_000_000 - mini_cost(19, 0, 7))
    );
}

#[tokio::test]
async fn a_client_that_did_not_ask_for_usage_gets_none_but_is_billed() {
    let g = spawn_gateway().await;
    let (u, key) = g.funded("nu@example.com", "1").await;
    let body = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let t = tokens(5, 0, 9);
    let text = g.chat(&key, &body, &knobs(&t)).await.text().await.unwrap();
    assert!(
        !text.contains("\"choices\":[]"),
        "usage chunk leaked: {text}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"));
    let seen = g.mock.upstream.requests().pop().unwrap();
    assert_eq!(seen.body["stream_options"]["include_usage"], true);
    assert_eq!(
        g.balance(&u).await.0,
        usd(1_000_000_000 - mini_cost(5, 0, 9))
    );
}

#[tokio::test]
async fn a_stream_dropped_half_way_is_billed_for_what_was_produced() {
    let g = spawn_gateway().await;
    let (u, key) = g.funded("drop@example.com", "1").await;
    let body = json!({"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "12345678"}], "max_tokens": 200});
    let r = g
        .chat(
            &key,
            &body,
            &[
                ("x-mock-completion-tokens", "200"),
                ("x-mock-chunk-delay-ms", "20"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut stream = r.bytes_stream();
    let mut seen = String::new();
    while seen.matches("tok ").count() < 5 {
        seen.push_str(std::str::from_utf8(&stream.next().await.unwrap().unwrap()).unwrap());
    }
    drop(stream);
    // The gateway notices, stops the upstream, and settles the estimate.
    wait_until("upstream stream closed", || async {
        g.mock.upstream.open_streams() == 0
    })
    .await;
    holds_released(&g, "hold settled").await;
    let spent = 1_000_000_000 - nanos(&g.balance(&u).await.0);
    // Input: 8 bytes of prompt = 2 tokens; output: 4 bytes a token, at least
    // the 5 the client saw, far fewer than the 200 asked for.
    let min = mini_cost(2, 0, 5);
    let max = mini_cost(2, 0, 199);
    assert!(
        spent >= min && spent <= max,
        "spent {spent} not in [{min}, {max}]"
    );
    assert_eq!((spent - 2 * 150) % 600, 0, "billed whole output tokens");
    let rec = g.reconcile().await;
    assert_eq!(rec["ok"], true);
}

#[tokio::test]
async fn an_upstream_cut_mid_stream_is_not_billed() {
    let g = spawn_gateway().await;
    let (u, key) = g.funded("cut@example.com", "1").await;
    let body = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let r = g
        .chat(
            &key,
            &body,
            &[
                ("x-mock-completion-tokens", "50"),
                ("x-mock-fail-after-chunks", "3"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.is_err(), "the client must see a cut stream");
    holds_released(&g, "hold released").await;
    assert_eq!(g.balance(&u).await.0, "1.00");
}

#[tokio::test]
async fn completions_and_embeddings_are_billed() {
    let g = spawn_gateway().await;
    let (u, key) = g.funded("e@example.com", "1").await;
    let r = send(
        post_as(&g, "/v1/embeddings", &key)
            .header("x-mock-prompt-tokens", "1000")
            .json(&json!({"model": "text-embedding-3-small", "input": "hello"})),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "list");
    // 1000 x 0.02/M = 0.00002
    assert_eq!(g.balance(&u).await.0, usd(1_000_000_000 - 20_000));

    let r = send(
        post_as(&g, "/v1/completions", &key)
            .header("x-mock-prompt-tokens", "100")
            .header("x-mock-completion-tokens", "10")
            .json(
                &json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say this", "max_tokens": 10}),
            ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap()["object"],
        "text_completion"
    );
    // 100 x 1.50/M + 10 x 2.00/M = 0.00015 + 0.00002
    assert_eq!(g.balance(&u).await.0, usd(1_000_000_000 - 20_000 - 170_000));
}

#[tokio::test]
async fn models_lists_the_priced_models_for_a_key() {
    let g = spawn_gateway().await;
    let (_u, key) = g.funded("m@example.com", "1").await;
    assert_eq!(
        get_status(&g, "/v1/models", None).await,
        StatusCode::UNAUTHORIZED
    );
    let r = g.get("/v1/models", Some(&key)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"gpt-4o-mini") && ids.contains(&"text-embedding-3-small"));
    assert_eq!(g.mock.upstream.request_count(), 0);
}

#[tokio::test]
async fn metrics_count_requests_without_key_labels() {
    let g = spawn_gateway().await;
    let (_u, key) = g.funded("mt@example.com", "1").await;
    assert_eq!(chat_status(&g, &key, &[]).await, StatusCode::OK);
    let text = metrics(&g).await;
    assert!(
        text.contains("tollgate_proxy_requests_total{route=\"chat\",status=\"200\"}"),
        "{text}"
    );
    assert!(text.contains("tollgate_wallet_settlements_total"));
    assert!(text.contains("tollgate_upstream_duration_seconds_bucket"));
    assert!(!text.contains(&key[..12]));
}

/// The billed POSTs are taken before the router (`server::Front`); what it
/// does not take still gets the router's answers.
#[tokio::test]
async fn only_the_billed_posts_bypass_the_router() {
    let g = spawn_gateway().await;
    let (_u, key) = g.funded("front@example.com", "1").await;
    let get = g
        .http
        .get(format!("{}/v1/chat/completions", g.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    for path in ["/v1/chat/completions/", "/v1/chat", "/v1/chat/completionsx"] {
        let r = g
            .http
            .post(format!("{}{path}", g.url))
            .bearer_auth(&key)
            .json(&chat_body("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let with_query =
        send(post_as(&g, "/v1/chat/completions?x=1", &key).json(&chat_body("gpt-4o-mini"))).await;
    assert_eq!(with_query.status(), StatusCode::OK);
    assert!(with_query.headers().contains_key("x-request-id"));
}
