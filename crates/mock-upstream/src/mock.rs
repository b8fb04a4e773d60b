//! `MockUpstream`: its routes, its server loop, and the recorder of the
//! requests it saw (bounded, shared by every clone), which tests read.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bodies::{completion_body, embeddings_body};
use crate::exchange::{Endpoint, Exchange};
use crate::knobs::{knobs_before_reply, Knobs};
use crate::response::{error_response, json_response, unix_now};
use crate::routes::{
    chat_completions, completions, embeddings, models, recorded_requests, unrouted, wrong_method,
    Incoming,
};
use crate::stream::{sse_response, Frames, OpenStream, SseEvents};

/// Requests kept for inspection; older ones are dropped so a benchmark
/// pushing millions of requests through the mock runs in bounded memory.
const MAX_RECORDED: usize = 10_000;
/// Requests with large prompts are legitimate; axum's 2 MiB default is not
/// what a real provider accepts.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// The fake upstream; clones share one recorder and one set of counters.
#[derive(Clone, Default)]
pub struct MockUpstream {
    inner: Arc<Inner>,
}

/// Shared state. A std `Mutex`, not tokio's: it guards a push/pop or a
/// clone, never an `.await`, so the cheaper blocking lock is the right one.
#[derive(Default)]
pub(crate) struct Inner {
    recorded: Mutex<VecDeque<RecordedRequest>>,
    request_count: AtomicUsize,
    pub(crate) open_streams: AtomicUsize,
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

    pub(crate) fn lock_recorded(&self) -> std::sync::MutexGuard<'_, VecDeque<RecordedRequest>> {
        // A panic while holding the lock cannot leave the deque invalid.
        self.inner
            .recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn record(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: Value) {
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
    pub(crate) async fn billed(&self, endpoint: Endpoint, incoming: Incoming) -> Response {
        let Incoming {
            method,
            uri,
            headers,
            body,
        } = incoming;
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

#[cfg(test)]
mod tests {
    use super::*;

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
