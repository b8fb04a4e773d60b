//! Streamed bodies (`chat_completion_stream_with_usage.sse`): the distinct
//! SSE events encoded once, their sequence, and the open-stream counter.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::bodies::{TextChoice, FINGERPRINT};
use crate::exchange::{Endpoint, Exchange, Usage, TOKEN_TEXT};
use crate::mock::Inner;

const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

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
pub(crate) struct Frames {
    first: Bytes,
    token: Bytes,
    finish: Bytes,
    usage: Option<Bytes>,
    done: Bytes,
}

impl Frames {
    pub(crate) fn build(exchange: &Exchange, id: u64, created: u64) -> serde_json::Result<Self> {
        match exchange.endpoint {
            Endpoint::Chat => Self::chat(exchange, id, created),
            Endpoint::Completions | Endpoint::Embeddings => Self::text(exchange, id, created),
        }
    }

    /// The sequence both endpoints share: the first, token and finish
    /// chunks (`"usage": null` with `include_usage`), then, only with
    /// `include_usage`, a `"choices": []` chunk carrying the usage.
    fn assemble<'e, C>(
        exchange: &'e Exchange,
        [first, token, finish]: [C; 3],
        chunk: impl Fn(&[C], Option<Option<&'e Usage>>) -> serde_json::Result<Bytes>,
    ) -> serde_json::Result<Self> {
        let null_usage = exchange.include_usage.then_some(None);
        Ok(Self {
            first: chunk(&[first], null_usage)?,
            token: chunk(&[token], null_usage)?,
            finish: chunk(&[finish], null_usage)?,
            usage: exchange
                .include_usage
                .then(|| chunk(&[], Some(Some(&exchange.usage))))
                .transpose()?,
            done: Bytes::from_static(SSE_DONE),
        })
    }

    /// `chat.completion.chunk` events: a role delta, token deltas, an empty
    /// delta with the finish reason.
    fn chat(exchange: &Exchange, id: u64, created: u64) -> serde_json::Result<Self> {
        let id = format!("chatcmpl-mock-{id}");
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
        let choices = [
            choice(role, None),
            choice(token, None),
            choice(Delta::default(), Some("stop")),
        ];
        Self::assemble(exchange, choices, |choices, usage| {
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
        })
    }

    /// `text_completion` events (completions): the same sequence, with
    /// `choices[].text` in place of deltas.
    fn text(exchange: &Exchange, id: u64, created: u64) -> serde_json::Result<Self> {
        let id = format!("cmpl-mock-{id}");
        let choice = |text, finish_reason| TextChoice {
            text,
            index: 0,
            logprobs: None,
            finish_reason,
        };
        let choices = [
            choice("", None),
            choice(TOKEN_TEXT, None),
            choice("", Some("stop")),
        ];
        Self::assemble(exchange, choices, |choices, usage| {
            sse_frame(&TextChunk {
                id: &id,
                object: "text_completion",
                created,
                model: &exchange.model,
                system_fingerprint: FINGERPRINT,
                choices,
                usage,
            })
        })
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
pub(crate) struct OpenStream(Arc<Inner>);

impl OpenStream {
    pub(crate) fn open(inner: &Arc<Inner>) -> Self {
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
pub(crate) struct SseEvents {
    frames: Frames,
    tokens: u64,
    fail_after_chunks: Option<u64>,
    chunk_delay: Option<Duration>,
    _open: OpenStream,
}

impl SseEvents {
    pub(crate) fn new(frames: Frames, exchange: &Exchange, open: OpenStream) -> Self {
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

pub(crate) fn sse_response(events: SseEvents) -> Response {
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
