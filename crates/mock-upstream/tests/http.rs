//! The mock over real sockets: the accounting, the streams, the knobs and
//! the control route, as a client of the gateway would see them.

// Tests may panic on unexpected errors: that is how they fail.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tollgate_mock_upstream::{MockUpstream, RecordedRequest};

/// Bounds every network wait so a broken mock fails a test, not hangs it.
const PATIENCE: Duration = Duration::from_secs(10);

struct Running {
    mock: MockUpstream,
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start() -> Running {
    let mock = MockUpstream::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(mock.clone().serve(listener, async move {
        let _ = stopped.await;
    }));
    Running {
        mock,
        addr,
        _stop: stop,
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// False when a chunked body ended without its terminating chunk.
    complete: bool,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A 200 with this content type.
    fn assert_ok(&self, content_type: &str) {
        assert_eq!(self.status, 200);
        assert_eq!(self.header("content-type"), Some(content_type));
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// The `data:` payloads of an SSE body, in order.
    fn events(&self) -> Vec<String> {
        let text = std::str::from_utf8(&self.body).unwrap();
        assert!(text.is_empty() || text.ends_with("\n\n"), "{text:?}");
        text.split_terminator("\n\n")
            .map(|event| event.strip_prefix("data: ").unwrap().to_owned())
            .collect()
    }
}

fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: mock\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(body);
    head.into_bytes()
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&request_bytes(method, path, headers, body))
            .await
            .unwrap();
        let mut raw = Vec::new();
        let mut buf = [0_u8; 8192];
        // An aborted stream may end in a reset rather than a clean EOF.
        while let Ok(read @ 1..) = tcp.read(&mut buf).await {
            raw.extend_from_slice(&buf[..read]);
        }
        raw
    };
    parse_reply(&tokio::time::timeout(PATIENCE, exchange).await.unwrap())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let split = find(raw, b"\r\n\r\n").expect("a complete response head");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value == "chunked");
    let (body, complete) = if chunked {
        dechunk(rest)
    } else {
        (rest.to_vec(), true)
    };
    Reply {
        status: status.parse().unwrap(),
        headers,
        body,
        complete,
    }
}

fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(raw, b"\r\n") else {
            return (body, false);
        };
        let size_text = std::str::from_utf8(&raw[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.trim(), 16).unwrap();
        if size == 0 {
            return (body, true);
        }
        let start = line_end + 2;
        if raw.len() < start + size + 2 {
            body.extend_from_slice(&raw[start.min(raw.len())..]);
            return (body, false);
        }
        body.extend_from_slice(&raw[start..start + size]);
        raw = &raw[start + size + 2..];
    }
}

/// A chat completion with `knobs` as headers.
async fn chat(up: &Running, knobs: &[(&str, &str)], body: &str) -> Reply {
    send(up.addr, "POST", "/v1/chat/completions", knobs, body).await
}

/// Waits for every stream of the mock to be closed or dropped.
async fn streams_close(up: &Running, what: &str) {
    eventually(what, || up.mock.open_streams() == 0).await;
}

/// Polls `condition` until it holds, failing after PATIENCE.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// 28 + 6 = 34 bytes of content: ceil(34 / 4) = 9 prompt tokens.
const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[
    {"role":"system","content":"You are a helpful assistant."},
    {"role":"user","content":"Hello!"}],"max_completion_tokens":5}"#;

const CHAT_STREAM: &str = r#"{"model":"gpt-4o-mini","messages":[
    {"role":"system","content":"You are a helpful assistant."},
    {"role":"user","content":"Hello!"}],"max_completion_tokens":256,
    "stream":true,"stream_options":{"include_usage":true}}"#;

#[tokio::test]
async fn chat_json_reports_the_deterministic_usage() {
    let up = start().await;
    let reply = chat(&up, &[("X-Mock-Cached-Tokens", "100")], CHAT).await;
    reply.assert_ok("application/json");
    let body = reply.json();
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-mock-"));
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o-mini");
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "tok tok tok tok tok ");
    assert_eq!(choice["message"]["refusal"], Value::Null);
    assert_eq!(choice["message"]["annotations"], serde_json::json!([]));
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(
        body["usage"],
        serde_json::json!({
            "prompt_tokens": 9,
            "completion_tokens": 5,
            "total_tokens": 14,
            // Asked for 100 cached, clamped to the 9 prompt tokens.
            "prompt_tokens_details": {"cached_tokens": 9, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0
            }
        })
    );

    assert_eq!(up.mock.request_count(), 1);
    let seen = up.mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert!(seen[0]
        .headers
        .contains(&("x-mock-cached-tokens".to_owned(), "100".to_owned())));
    assert_eq!(seen[0].body["max_completion_tokens"], 5);
}

#[tokio::test]
async fn completions_count_prompt_arrays_and_honour_overrides() {
    let up = start().await;
    // 5 + 4 bytes = ceil(9 / 4) = 3 prompt tokens; max_tokens = 2.
    let body = r#"{"model":"gpt-3.5-turbo-instruct","prompt":["Say t","his!"],"max_tokens":2}"#;
    let json = send(up.addr, "POST", "/v1/completions", &[], body)
        .await
        .json();
    assert_eq!(json["object"], "text_completion");
    assert_eq!(json["choices"][0]["text"], "tok tok ");
    assert_eq!(json["usage"]["prompt_tokens"], 3);
    assert_eq!(json["usage"]["completion_tokens"], 2);
    assert_eq!(json["usage"]["total_tokens"], 5);

    let overridden = [
        ("x-mock-prompt-tokens", "40"),
        ("x-mock-completion-tokens", "1"),
    ];
    let json = send(up.addr, "POST", "/v1/completions", &overridden, body)
        .await
        .json();
    assert_eq!(json["usage"]["prompt_tokens"], 40);
    assert_eq!(json["usage"]["completion_tokens"], 1);
    assert_eq!(json["usage"]["total_tokens"], 41);
    assert_eq!(json["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
}

#[tokio::test]
async fn embeddings_return_one_vector_per_input_and_prompt_usage_only() {
    let up = start().await;
    let body = r#"{"model":"text-embedding-3-small","input":["abcd","efghi"]}"#;
    let json = send(up.addr, "POST", "/v1/embeddings", &[], body)
        .await
        .json();
    assert_eq!(json["object"], "list");
    assert_eq!(json["model"], "text-embedding-3-small");
    let data = json["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[1]["object"], "embedding");
    assert_eq!(data[1]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(
        json["usage"],
        serde_json::json!({"prompt_tokens": 3, "total_tokens": 3})
    );
}

#[tokio::test]
async fn stream_with_include_usage_ends_with_the_usage_chunk_then_done() {
    let up = start().await;
    let reply = chat(&up, &[("x-mock-completion-tokens", "3")], CHAT_STREAM).await;
    reply.assert_ok("text/event-stream");
    assert!(reply.complete);
    let events = reply.events();
    // Role chunk, 3 tokens, finish chunk, usage chunk, [DONE].
    assert_eq!(events.len(), 7, "{events:#?}");
    assert_eq!(events[6], "[DONE]");
    let chunks: Vec<Value> = events[..6]
        .iter()
        .map(|event| serde_json::from_str(event).unwrap())
        .collect();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-4o-mini");
        assert_eq!(chunk["id"], chunks[0]["id"]);
    }
    assert_eq!(
        chunks[0]["choices"],
        serde_json::json!([{"index": 0,
            "delta": {"role": "assistant", "content": "", "refusal": null},
            "logprobs": null, "finish_reason": null}])
    );
    for token in &chunks[1..4] {
        assert_eq!(
            token["choices"][0]["delta"],
            serde_json::json!({"content": "tok "})
        );
        assert_eq!(token["usage"], Value::Null);
        assert!(token.as_object().unwrap().contains_key("usage"));
    }
    assert_eq!(chunks[4]["choices"][0]["delta"], serde_json::json!({}));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[5]["choices"], serde_json::json!([]));
    assert_eq!(chunks[5]["usage"]["prompt_tokens"], 9);
    assert_eq!(chunks[5]["usage"]["completion_tokens"], 3);
    assert_eq!(chunks[5]["usage"]["total_tokens"], 12);
    assert_eq!(
        chunks[5]["usage"]["prompt_tokens_details"]["cached_tokens"],
        0
    );
    streams_close(&up, "the finished stream to close").await;
}

#[tokio::test]
async fn stream_without_include_usage_has_no_usage_at_all() {
    let up = start().await;
    let body = r#"{"model":"m","prompt":"hi","max_tokens":2,"stream":true}"#;
    let events = send(up.addr, "POST", "/v1/completions", &[], body)
        .await
        .events();
    // Empty first chunk, 2 tokens, finish chunk, [DONE].
    assert_eq!(events.len(), 5, "{events:#?}");
    assert_eq!(events[4], "[DONE]");
    let texts: Vec<Value> = events[..4]
        .iter()
        .map(|event| {
            let chunk: Value = serde_json::from_str(event).unwrap();
            assert_eq!(chunk["object"], "text_completion");
            assert!(!chunk.as_object().unwrap().contains_key("usage"));
            chunk["choices"][0]["text"].clone()
        })
        .collect();
    assert_eq!(texts, ["", "tok ", "tok ", ""]);
}

#[tokio::test]
async fn x_mock_status_answers_that_status_with_an_openai_error() {
    let up = start().await;
    let reply = chat(&up, &[("x-mock-status", "500")], CHAT).await;
    assert_eq!(reply.status, 500);
    assert_eq!(
        reply.json(),
        serde_json::json!({"error": {"message": "mock failure",
            "type": "server_error", "code": null}})
    );
    assert_eq!(up.mock.request_count(), 1);
}

#[tokio::test]
async fn invalid_json_is_a_400_and_is_recorded_as_null() {
    let up = start().await;
    let reply = chat(&up, &[], "{nope").await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
    assert_eq!(up.mock.requests()[0].body, Value::Null);
}

#[tokio::test]
async fn fail_after_chunks_truncates_the_stream() {
    let up = start().await;
    let reply = chat(
        &up,
        &[
            ("x-mock-completion-tokens", "5"),
            ("x-mock-fail-after-chunks", "2"),
        ],
        CHAT_STREAM,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(!reply.complete, "the body must end without its last chunk");
    let events = reply.events();
    assert_eq!(events.len(), 3, "role chunk and 2 tokens: {events:#?}");
    assert!(events.iter().all(|event| event != "[DONE]"));
    streams_close(&up, "the aborted stream to close").await;
}

#[tokio::test]
async fn open_streams_returns_to_zero_when_the_client_drops_mid_stream() {
    let up = start().await;
    let mut tcp = TcpStream::connect(up.addr).await.unwrap();
    let request = request_bytes(
        "POST",
        "/v1/chat/completions",
        &[
            ("x-mock-completion-tokens", "100000"),
            ("x-mock-chunk-delay-ms", "5"),
        ],
        CHAT_STREAM,
    );
    tcp.write_all(&request).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0_u8; 4096];
    while find(&seen, b"tok ").is_none() {
        let read = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(read > 0, "stream ended early");
        seen.extend_from_slice(&buf[..read]);
    }
    assert_eq!(up.mock.open_streams(), 1);
    drop(tcp);
    streams_close(&up, "the abandoned stream to be dropped").await;
}

#[tokio::test]
async fn control_route_lists_requests_without_recording_itself() {
    let up = start().await;
    send(up.addr, "GET", "/v1/models", &[], "").await;
    let reply = send(up.addr, "GET", "/mock/requests", &[], "").await;
    let listed: Vec<RecordedRequest> = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].path, "/v1/models");
    assert_eq!(up.mock.request_count(), 1);
}
