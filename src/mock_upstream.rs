//! Mock upstream: an OpenAI-compatible fake provider (chat completions,
//! completions, embeddings, models; JSON and SSE) with deterministic usage
//! and header-driven failures, so the demo, the integration tests and the
//! benchmarks can bill exact, predictable numbers without a real provider.
//!
//! # Accounting (so a test can compute the expected bill)
//! - `prompt_tokens` = ceil(bytes of the prompt text / 4), at least 1. The
//!   prompt text is every `messages[].content` (chat; a string, or the
//!   `text` of each content part), `prompt` (completions) or `input`
//!   (embeddings), each a string or an array of strings.
//! - `completion_tokens` = `max_completion_tokens`, else `max_tokens`, else
//!   16 (capped at 1,000,000 so a typo cannot exhaust memory). The
//!   completion text is that many copies of `"tok "`, one SSE event each.
//! - `usage.prompt_tokens_details.cached_tokens` = 0 unless overridden.
//! - `finish_reason` is always `"stop"`; embeddings bill prompt tokens only.
//!
//! # Streams (`"stream": true`)
//! Chat follows `chat_completion_stream_with_usage.sse`: a role chunk
//! (`content: ""`), one chunk per token, a finish chunk, then, only with
//! `stream_options.include_usage`, a `"choices": []` chunk carrying the
//! usage (every earlier chunk then has `"usage": null`), then `[DONE]`.
//! Completions use the same sequence of `text_completion` chunks, the first
//! with `text: ""`.
//!
//! # Knobs (request headers; an unparsable value is a 400 naming it)
//! - `x-mock-prompt-tokens: N`, `x-mock-completion-tokens: N`,
//!   `x-mock-cached-tokens: N` (clamped to the prompt tokens): override usage.
//! - `x-mock-delay-ms: N`: sleep before the response head.
//! - `x-mock-status: CODE`: answer `CODE` with an OpenAI-shaped error body.
//! - `x-mock-chunk-delay-ms: N`: sleep between SSE events.
//! - `x-mock-fail-after-chunks: N`: abort a stream after N token events
//!   (N is clamped to the token count, so the stream is always truncated:
//!   no finish chunk, no usage chunk, no `[DONE]`).
//!
//! Every request on an `OpenAI` route (and any unknown route) is recorded
//! before it is answered. The control route `GET /mock/requests` is not
//! recorded, so a test that polls it does not see its own polling.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Requests kept for inspection; older ones are dropped so a benchmark
/// pushing millions of requests through the mock runs in bounded memory.
const MAX_RECORDED: usize = 10_000;
const DEFAULT_COMPLETION_TOKENS: u64 = 16;
/// A completion is materialised in memory, so a bogus `max_tokens` must not
/// be able to allocate gigabytes.
const MAX_COMPLETION_TOKENS: u64 = 1_000_000;
/// One completion token: exactly 4 bytes, so text length = 4 x tokens.
const TOKEN_TEXT: &str = "tok ";
/// Requests with large prompts are legitimate; axum's 2 MiB default is not
/// what a real provider accepts.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
const FINGERPRINT: &str = "fp_mock";
const DEFAULT_MODEL: &str = "mock-model";
/// Every embedding is this vector: small, fixed, and easy to assert on.
const EMBEDDING: [f32; 8] = [
    0.0023064255,
    -0.009327292,
    -0.0028842222,
    0.015_625,
    -0.03125,
    0.0625,
    -0.125,
    0.25,
];
const MOCK_FAILURE_BODY: &str =
    r#"{"error":{"message":"mock failure","type":"server_error","code":null}}"#;
const MODELS_BODY: &str = concat!(
    r#"{"object":"list","data":["#,
    r#"{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"mock"},"#,
    r#"{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"mock"},"#,
    r#"{"id":"gpt-3.5-turbo-instruct","object":"model","created":1692901427,"owned_by":"mock"},"#,
    r#"{"id":"text-embedding-3-small","object":"model","created":1705948997,"owned_by":"mock"}"#,
    r#"]}"#
);
const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

/// The fake upstream; clones share one recorder and one set of counters.
#[derive(Clone, Default)]
pub struct MockUpstream {
    inner: Arc<Inner>,
}

/// Shared state. A std `Mutex`, not tokio's: it guards a push/pop or a
/// clone, never an `.await`, so the cheaper blocking lock is the right one.
#[derive(Default)]
struct Inner {
    recorded: Mutex<VecDeque<RecordedRequest>>,
    request_count: AtomicUsize,
    open_streams: AtomicUsize,
    next_id: AtomicU64,
}

/// One request as the mock saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Names are lowercase (HTTP/1 names are case-insensitive and `http`
    /// normalises them); values are lossily decoded as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The parsed JSON body, or `Null` when it was empty or not JSON.
    pub body: Value,
}

impl MockUpstream {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Every route of the mock, state included.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/completions", post(completions))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/models", get(models))
            .route("/mock/requests", get(recorded_requests))
            .fallback(unrouted)
            .method_not_allowed_fallback(wrong_method)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(self.clone())
    }

    /// Serves until `shutdown` resolves, then drains open connections.
    ///
    /// # Errors
    /// Whatever `axum::serve` reports; accept errors are retried by axum.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        // Nagle would hold back the small SSE writes behind delayed ACKs and
        // add tens of milliseconds per event to streaming benchmarks.
        let listener = listener.tap_io(|tcp| {
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(%err, "mock upstream: could not set TCP_NODELAY");
            }
        });
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// The last 10,000 requests, oldest first.
    #[must_use]
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock_recorded().iter().cloned().collect()
    }

    /// Every request recorded since start, including those no longer kept.
    #[must_use]
    pub fn request_count(&self) -> usize {
        self.inner.request_count.load(Ordering::Relaxed)
    }

    /// SSE bodies not yet finished or dropped.
    #[must_use]
    pub fn open_streams(&self) -> usize {
        self.inner.open_streams.load(Ordering::Relaxed)
    }

    fn lock_recorded(&self) -> std::sync::MutexGuard<'_, VecDeque<RecordedRequest>> {
        // A panic while holding the lock cannot leave the deque invalid.
        self.inner
            .recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: Value) {
        let request = RecordedRequest {
            method: method.as_str().to_owned(),
            path: uri.path().to_owned(),
            headers: headers
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.as_str().to_owned(), value)
                })
                .collect(),
            body,
        };
        let mut recorded = self.lock_recorded();
        if recorded.len() >= MAX_RECORDED {
            recorded.pop_front();
        }
        recorded.push_back(request);
        // Counted under the lock: whoever sees count N finds request N listed.
        self.inner.request_count.fetch_add(1, Ordering::Relaxed);
    }

    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The billed routes: record, apply the knobs, then answer.
    async fn billed(
        &self,
        endpoint: Endpoint,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let knobs = Knobs::parse(&headers);
        let parsed = serde_json::from_slice::<Value>(&body);
        // Read before recording so the body moves into the record uncloned.
        let exchange = match (&knobs, &parsed) {
            (Ok(knobs), Ok(request)) => Ok(Exchange::read(endpoint, request, knobs)),
            (Err(message), _) => Err(message.clone()),
            (Ok(_), Err(err)) => Err(format!("invalid JSON body: {err}")),
        };
        self.record(&method, &uri, &headers, parsed.unwrap_or(Value::Null));

        if let Some(early) = knobs_before_reply(&knobs).await {
            return early;
        }
        match exchange {
            Ok(exchange) => self.reply(&exchange),
            Err(message) => {
                error_response(StatusCode::BAD_REQUEST, &message, "invalid_request_error")
            }
        }
    }

    fn reply(&self, exchange: &Exchange) -> Response {
        let id = self.next_id();
        let created = unix_now();
        let result = match (exchange.endpoint, exchange.stream) {
            (Endpoint::Embeddings, _) => embeddings_body(exchange).map(json_response),
            (_, false) => completion_body(exchange, id, created).map(json_response),
            (_, true) => Frames::build(exchange, id, created).map(|frames| {
                let open = OpenStream::open(&self.inner);
                sse_response(SseEvents::new(frames, exchange, open))
            }),
        };
        result.unwrap_or_else(|err| {
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("mock upstream could not encode its reply: {err}"),
                "server_error",
            )
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completions,
    Embeddings,
}

async fn chat_completions(
    State(mock): State<MockUpstream>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    mock.billed(Endpoint::Chat, method, uri, headers, body)
        .await
}

async fn completions(
    State(mock): State<MockUpstream>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    mock.billed(Endpoint::Completions, method, uri, headers, body)
        .await
}

async fn embeddings(
    State(mock): State<MockUpstream>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    mock.billed(Endpoint::Embeddings, method, uri, headers, body)
        .await
}

async fn models(
    State(mock): State<MockUpstream>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let knobs = Knobs::parse(&headers);
    mock.record(&method, &uri, &headers, json_or_null(&body));
    if let Some(early) = knobs_before_reply(&knobs).await {
        return early;
    }
    json_response(Bytes::from_static(MODELS_BODY.as_bytes()))
}

/// Control route for out-of-process tests; deliberately not recorded.
async fn recorded_requests(State(mock): State<MockUpstream>) -> Response {
    match serde_json::to_vec(&*mock.lock_recorded()) {
        Ok(body) => json_response(Bytes::from(body)),
        Err(err) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("could not encode the recorded requests: {err}"),
            "server_error",
        ),
    }
}

async fn unrouted(
    State(mock): State<MockUpstream>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let message = format!("mock upstream has no route {method} {}", uri.path());
    mock.record(&method, &uri, &headers, json_or_null(&body));
    error_response(StatusCode::NOT_FOUND, &message, "invalid_request_error")
}

async fn wrong_method(
    State(mock): State<MockUpstream>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let message = format!("mock upstream does not allow {method} {}", uri.path());
    mock.record(&method, &uri, &headers, json_or_null(&body));
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &message,
        "invalid_request_error",
    )
}

/// The header knobs of one request.
#[derive(Debug, Default)]
struct Knobs {
    status: Option<StatusCode>,
    delay: Option<Duration>,
    chunk_delay: Option<Duration>,
    fail_after_chunks: Option<u64>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    cached_tokens: Option<u64>,
}

impl Knobs {
    /// A malformed knob is an error, not ignored: a test with a typo in a
    /// knob should fail loudly rather than pass against default behaviour.
    fn parse(headers: &HeaderMap) -> Result<Self, String> {
        let number = |name: &str| -> Result<Option<u64>, String> {
            headers
                .get(name)
                .map(|value| {
                    value
                        .to_str()
                        .ok()
                        .and_then(|text| text.trim().parse::<u64>().ok())
                        .ok_or_else(|| format!("header {name} must be a non-negative integer"))
                })
                .transpose()
        };
        let millis = |name: &str| number(name).map(|ms| ms.map(Duration::from_millis));
        let status = number("x-mock-status")?
            .map(|code| {
                u16::try_from(code)
                    .ok()
                    .and_then(|code| StatusCode::from_u16(code).ok())
                    .ok_or_else(|| "header x-mock-status must be an HTTP status code".to_owned())
            })
            .transpose()?;
        Ok(Self {
            status,
            delay: millis("x-mock-delay-ms")?,
            chunk_delay: millis("x-mock-chunk-delay-ms")?,
            fail_after_chunks: number("x-mock-fail-after-chunks")?,
            prompt_tokens: number("x-mock-prompt-tokens")?,
            completion_tokens: number("x-mock-completion-tokens")?,
            cached_tokens: number("x-mock-cached-tokens")?,
        })
    }
}

/// The knobs that act before any body is chosen, in order: a malformed knob
/// (400), the delay, then a forced status. `None` means answer normally.
async fn knobs_before_reply(knobs: &Result<Knobs, String>) -> Option<Response> {
    let knobs = match knobs {
        Ok(knobs) => knobs,
        Err(message) => {
            return Some(error_response(
                StatusCode::BAD_REQUEST,
                message,
                "invalid_request_error",
            ))
        }
    };
    if let Some(delay) = knobs.delay {
        tokio::time::sleep(delay).await;
    }
    knobs.status.map(|status| {
        let mut response = json_response(Bytes::from_static(MOCK_FAILURE_BODY.as_bytes()));
        *response.status_mut() = status;
        response
    })
}

/// Everything the reply needs, read from the request body and the knobs.
struct Exchange {
    endpoint: Endpoint,
    model: String,
    usage: Usage,
    /// Embeddings only: how many vectors to return.
    inputs: usize,
    stream: bool,
    include_usage: bool,
    chunk_delay: Option<Duration>,
    fail_after_chunks: Option<u64>,
}

impl Exchange {
    fn read(endpoint: Endpoint, request: &Value, knobs: &Knobs) -> Self {
        let prompt_bytes = match endpoint {
            Endpoint::Chat => {
                request
                    .get("messages")
                    .and_then(Value::as_array)
                    .map_or(0, |messages| {
                        messages
                            .iter()
                            .map(|message| text_bytes(message.get("content")))
                            .sum()
                    })
            }
            Endpoint::Completions => text_bytes(request.get("prompt")),
            Endpoint::Embeddings => text_bytes(request.get("input")),
        };
        let counted_prompt = u64::try_from(prompt_bytes.div_ceil(4))
            .unwrap_or(u64::MAX)
            .max(1);
        let prompt_tokens = knobs.prompt_tokens.unwrap_or(counted_prompt);
        let completion_tokens = match endpoint {
            Endpoint::Embeddings => 0,
            Endpoint::Chat | Endpoint::Completions => knobs
                .completion_tokens
                .or_else(|| request.get("max_completion_tokens").and_then(Value::as_u64))
                .or_else(|| request.get("max_tokens").and_then(Value::as_u64))
                .unwrap_or(DEFAULT_COMPLETION_TOKENS)
                .min(MAX_COMPLETION_TOKENS),
        };
        let cached_tokens = knobs.cached_tokens.unwrap_or(0).min(prompt_tokens);
        let flag = |pointer: &str| {
            request
                .pointer(pointer)
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        Self {
            endpoint,
            model: request
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or(DEFAULT_MODEL)
                .to_owned(),
            usage: Usage::new(prompt_tokens, completion_tokens, cached_tokens),
            inputs: input_count(request.get("input")),
            stream: endpoint != Endpoint::Embeddings && flag("/stream"),
            include_usage: flag("/stream_options/include_usage"),
            chunk_delay: knobs.chunk_delay,
            fail_after_chunks: knobs.fail_after_chunks,
        }
    }

    fn completion_text(&self) -> String {
        // Within MAX_COMPLETION_TOKENS, so the conversion cannot fail.
        TOKEN_TEXT.repeat(usize::try_from(self.usage.completion_tokens).unwrap_or(0))
    }
}

/// Bytes of prompt text in a string, or in an array of strings and/or
/// content parts (`{"type":"text","text":...}`); anything else counts 0.
fn text_bytes(value: Option<&Value>) -> usize {
    match value {
        Some(Value::String(text)) => text.len(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => text.len(),
                Value::Object(part) => part.get("text").and_then(Value::as_str).map_or(0, str::len),
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

/// Embedding inputs: a string or one token array is one input; an array of
/// strings (or of token arrays) is one input per element.
fn input_count(input: Option<&Value>) -> usize {
    match input {
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_number) => 1,
        Some(Value::Array(items)) => items.len(),
        _ => 1,
    }
}

#[derive(Clone, Copy, Debug, Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptTokensDetails,
    completion_tokens_details: CompletionTokensDetails,
}

#[derive(Clone, Copy, Debug, Serialize)]
struct PromptTokensDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
struct CompletionTokensDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

impl Usage {
    fn new(prompt_tokens: u64, completion_tokens: u64, cached_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens,
                audio_tokens: 0,
            },
            completion_tokens_details: CompletionTokensDetails::default(),
        }
    }
}

// ---- Non-streamed bodies: the shapes of the fixtures ----

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChatChoice<'a>; 1],
    usage: &'a Usage,
    service_tier: &'static str,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: ChatMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
    annotations: [(); 0],
}

#[derive(Serialize)]
struct TextCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: [TextChoice<'a>; 1],
    /// `Option<Option<_>>`: absent, `null`, or the usage object, as streams need.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<&'a Usage>>,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    embedding: &'static [f32],
    index: usize,
}

/// Embeddings report prompt tokens only, like the fixture.
#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

fn completion_body(exchange: &Exchange, id: u64, created: u64) -> serde_json::Result<Vec<u8>> {
    let text = exchange.completion_text();
    match exchange.endpoint {
        Endpoint::Chat => serde_json::to_vec(&ChatCompletion {
            id: &format!("chatcmpl-mock-{id}"),
            object: "chat.completion",
            created,
            model: &exchange.model,
            choices: [ChatChoice {
                index: 0,
                message: ChatMessage {
                    role: "assistant",
                    content: &text,
                    refusal: None,
                    annotations: [],
                },
                logprobs: None,
                finish_reason: "stop",
            }],
            usage: &exchange.usage,
            service_tier: "default",
            system_fingerprint: FINGERPRINT,
        }),
        Endpoint::Completions | Endpoint::Embeddings => serde_json::to_vec(&TextCompletion {
            id: &format!("cmpl-mock-{id}"),
            object: "text_completion",
            created,
            model: &exchange.model,
            system_fingerprint: FINGERPRINT,
            choices: [TextChoice {
                text: &text,
                index: 0,
                logprobs: None,
                finish_reason: Some("stop"),
            }],
            usage: Some(Some(&exchange.usage)),
        }),
    }
}

fn embeddings_body(exchange: &Exchange) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&EmbeddingList {
        object: "list",
        data: (0..exchange.inputs)
            .map(|index| Embedding {
                object: "embedding",
                embedding: &EMBEDDING,
                index,
            })
            .collect(),
        model: &exchange.model,
        usage: EmbeddingUsage {
            prompt_tokens: exchange.usage.prompt_tokens,
            total_tokens: exchange.usage.prompt_tokens,
        },
    })
}

// ---- Streamed bodies: chat_completion_stream_with_usage.sse ----

#[derive(Serialize)]
struct ChatChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    service_tier: &'static str,
    system_fingerprint: &'static str,
    choices: &'a [ChatChunkChoice<'a>],
    /// Absent without `include_usage`; `null` on every chunk but the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<&'a Usage>>,
}

#[derive(Serialize)]
struct ChatChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Default, Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<Option<()>>,
}

/// The distinct SSE events of one stream, each encoded once: every token
/// event is the same bytes, so a long stream is refcount bumps, not JSON.
struct Frames {
    first: Bytes,
    token: Bytes,
    finish: Bytes,
    usage: Option<Bytes>,
    done: Bytes,
}

impl Frames {
    fn build(exchange: &Exchange, id: u64, created: u64) -> serde_json::Result<Self> {
        let null_usage = exchange.include_usage.then_some(None);
        let final_usage = exchange.include_usage.then_some(&exchange.usage);
        match exchange.endpoint {
            Endpoint::Chat => {
                let id = format!("chatcmpl-mock-{id}");
                let chunk = |choices: &[ChatChunkChoice<'_>], usage| {
                    sse_frame(&ChatChunk {
                        id: &id,
                        object: "chat.completion.chunk",
                        created,
                        model: &exchange.model,
                        service_tier: "default",
                        system_fingerprint: FINGERPRINT,
                        choices,
                        usage,
                    })
                };
                let choice = |delta, finish_reason| ChatChunkChoice {
                    index: 0,
                    delta,
                    logprobs: None,
                    finish_reason,
                };
                let role = Delta {
                    role: Some("assistant"),
                    content: Some(""),
                    refusal: Some(None),
                };
                let token = Delta {
                    content: Some(TOKEN_TEXT),
                    ..Delta::default()
                };
                Ok(Self {
                    first: chunk(&[choice(role, None)], null_usage)?,
                    token: chunk(&[choice(token, None)], null_usage)?,
                    finish: chunk(&[choice(Delta::default(), Some("stop"))], null_usage)?,
                    usage: final_usage
                        .map(|usage| chunk(&[], Some(Some(usage))))
                        .transpose()?,
                    done: Bytes::from_static(SSE_DONE),
                })
            }
            Endpoint::Completions | Endpoint::Embeddings => {
                let id = format!("cmpl-mock-{id}");
                let chunk = |choices: &[TextChoice<'_>], usage| {
                    sse_frame(&TextChunk {
                        id: &id,
                        object: "text_completion",
                        created,
                        model: &exchange.model,
                        system_fingerprint: FINGERPRINT,
                        choices,
                        usage,
                    })
                };
                let choice = |text, finish_reason| TextChoice {
                    text,
                    index: 0,
                    logprobs: None,
                    finish_reason,
                };
                Ok(Self {
                    first: chunk(&[choice("", None)], null_usage)?,
                    token: chunk(&[choice(TOKEN_TEXT, None)], null_usage)?,
                    finish: chunk(&[choice("", Some("stop"))], null_usage)?,
                    usage: final_usage
                        .map(|usage| chunk(&[], Some(Some(usage))))
                        .transpose()?,
                    done: Bytes::from_static(SSE_DONE),
                })
            }
        }
    }
}

/// A completions stream chunk: `text_completion` with `choices[].text`.
#[derive(Serialize)]
struct TextChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: &'a [TextChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<&'a Usage>>,
}

fn sse_frame(chunk: &impl Serialize) -> serde_json::Result<Bytes> {
    let mut frame = b"data: ".to_vec();
    serde_json::to_writer(&mut frame, chunk)?;
    frame.extend_from_slice(b"\n\n");
    Ok(Bytes::from(frame))
}

/// Counts one SSE body as open from creation until it is dropped: finished,
/// aborted by a knob, or abandoned when hyper sees the client go away.
struct OpenStream(Arc<Inner>);

impl OpenStream {
    fn open(inner: &Arc<Inner>) -> Self {
        inner.open_streams.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(inner))
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The event sequence of one stream: role chunk, one chunk per token, finish
/// chunk, usage chunk (if asked for), `[DONE]`; or, with
/// `x-mock-fail-after-chunks`, the role chunk, N token chunks and an error.
struct SseEvents {
    frames: Frames,
    tokens: u64,
    fail_after_chunks: Option<u64>,
    chunk_delay: Option<Duration>,
    _open: OpenStream,
}

impl SseEvents {
    fn new(frames: Frames, exchange: &Exchange, open: OpenStream) -> Self {
        Self {
            frames,
            tokens: exchange.usage.completion_tokens,
            fail_after_chunks: exchange.fail_after_chunks,
            chunk_delay: exchange.chunk_delay,
            _open: open,
        }
    }

    /// Event `index` of the stream; `None` once it has ended.
    fn event(&self, index: u64) -> Option<io::Result<Bytes>> {
        let tokens = self
            .fail_after_chunks
            .map_or(self.tokens, |after| after.min(self.tokens));
        if index == 0 {
            return Some(Ok(self.frames.first.clone()));
        }
        if index <= tokens {
            return Some(Ok(self.frames.token.clone()));
        }
        let after_tokens = usize::try_from(index - tokens - 1).ok()?;
        if self.fail_after_chunks.is_some() {
            // An error from the body makes hyper drop the connection without
            // the terminating chunk: the client sees a truncated stream.
            return (after_tokens == 0).then(|| {
                Err(io::Error::other(
                    "x-mock-fail-after-chunks: aborting stream",
                ))
            });
        }
        let frames = &self.frames;
        [
            Some(&frames.finish),
            frames.usage.as_ref(),
            Some(&frames.done),
        ]
        .into_iter()
        .flatten()
        .nth(after_tokens)
        .map(|frame| Ok(frame.clone()))
    }
}

fn sse_response(events: SseEvents) -> Response {
    let stream = futures_util::stream::unfold((events, 0_u64), |(events, index)| async move {
        let event = events.event(index)?;
        if event.is_err() {
            // On a body error hyper drops the connection and its unflushed
            // write buffer; going Pending once first lets it flush the events
            // already produced, so the client sees them and then the cut.
            tokio::task::yield_now().await;
        }
        if index > 0 {
            if let Some(delay) = events.chunk_delay {
                tokio::time::sleep(delay).await;
            }
        }
        Some((event, (events, index + 1)))
    });
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

fn json_response(body: impl Into<Bytes>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.into(),
    )
        .into_response()
}

/// The `OpenAI` error shape: `{"error":{"message","type","code"}}`.
fn error_response(status: StatusCode, message: &str, kind: &str) -> Response {
    let body = serde_json::json!({
        "error": { "message": message, "type": kind, "code": null }
    });
    (status, axum::Json(body)).into_response()
}

fn json_or_null(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::oneshot;

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
        let reply = send(
            up.addr,
            "POST",
            "/v1/chat/completions",
            &[("X-Mock-Cached-Tokens", "100")],
            CHAT,
        )
        .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("application/json"));
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
        let reply = send(
            up.addr,
            "POST",
            "/v1/chat/completions",
            &[("x-mock-completion-tokens", "3")],
            CHAT_STREAM,
        )
        .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("text/event-stream"));
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
        eventually("the finished stream to close", || {
            up.mock.open_streams() == 0
        })
        .await;
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
        let reply = send(
            up.addr,
            "POST",
            "/v1/chat/completions",
            &[("x-mock-status", "500")],
            CHAT,
        )
        .await;
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
        let reply = send(up.addr, "POST", "/v1/chat/completions", &[], "{nope").await;
        assert_eq!(reply.status, 400);
        assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
        assert_eq!(up.mock.requests()[0].body, Value::Null);
    }

    #[tokio::test]
    async fn fail_after_chunks_truncates_the_stream() {
        let up = start().await;
        let reply = send(
            up.addr,
            "POST",
            "/v1/chat/completions",
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
        eventually("the aborted stream to close", || {
            up.mock.open_streams() == 0
        })
        .await;
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
        eventually("the abandoned stream to be dropped", || {
            up.mock.open_streams() == 0
        })
        .await;
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

    #[test]
    fn the_record_keeps_only_the_last_ten_thousand() {
        let mock = MockUpstream::new();
        let uri = Uri::from_static("/v1/models");
        for n in 0..MAX_RECORDED + 5 {
            mock.record(&Method::GET, &uri, &HeaderMap::new(), Value::from(n));
        }
        assert_eq!(mock.request_count(), MAX_RECORDED + 5);
        let kept = mock.requests();
        assert_eq!(kept.len(), MAX_RECORDED);
        assert_eq!(kept[0].body, Value::from(5));
        assert_eq!(kept[MAX_RECORDED - 1].body, Value::from(MAX_RECORDED + 4));
    }
}
