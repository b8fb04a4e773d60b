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

//!
//! # Files
//! - `mock`: `MockUpstream` (router, serve, the request recorder).
//! - `routes`: the axum handlers, one per route.
//! - `knobs`: the `x-mock-*` request headers.
//! - `exchange`: what a request asks for and the usage it will report.
//! - `bodies`: the non-streamed JSON bodies.
//! - `stream`: the SSE events of a streamed reply.
//! - `response`: small response builders shared by the above.

mod bodies;
mod exchange;
mod knobs;
mod mock;
mod response;
mod routes;
mod stream;

pub use mock::{MockUpstream, RecordedRequest};
