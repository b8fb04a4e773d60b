//! Relay: the upstream's answer passed on to the client as it arrives,
//! metered on the way, and settled before its last byte leaves (B6).
//! Streams (SSE) are relayed event by event (P2, M11); other answers chunk
//! by chunk with bounded meter state (M8), one chunk held back so the
//! settlement can precede the end. A compressed answer is decoded first
//! (M1). A client that leaves a stream is billed for what was produced
//! (U4a); one that leaves a non-streamed answer has it read to its end and
//! billed by its usage (M9).

use std::io;
use std::pin::Pin;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use tokio_util::io::{ReaderStream, StreamReader};
use tokio_util::task::TaskTracker;

use super::bill::Billing;
use super::meter::{JsonMeter, SseMeter};
use super::upstream::UpstreamBody;
use super::ProxyError;
use crate::store::RequestStatus;

type Decoded = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// The upstream's body as plain bytes: as sent, or decoded (M1).
pub enum Source {
    Plain(UpstreamBody),
    Decoded(Decoded),
}

/// One read from the upstream.
enum Next {
    Data(Bytes),
    End,
    /// Broken off, malformed, or silent past the read timeout: not billed.
    Failed,
}

impl Source {
    /// The body of an answer with `headers`, decoded when the upstream
    /// compressed it though asked not to (M1); `Content-Encoding` is then
    /// removed, since the client gets the decoded bytes. A coding the
    /// gateway cannot decode is an upstream failure: it could not be
    /// metered.
    pub fn new(body: UpstreamBody, headers: &mut HeaderMap) -> Result<Source, ProxyError> {
        if !headers.contains_key(header::CONTENT_ENCODING) {
            return Ok(Source::Plain(body));
        }
        // The codings in the order applied, `identity` (none) left out.
        // Several real codings at once are not decoded (no upstream this
        // serves sends them): a 502, as for an unknown one.
        let codings: Vec<String> = headers
            .get_all(header::CONTENT_ENCODING)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("?").split(','))
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty() && c != "identity")
            .collect();
        let coding = match codings.as_slice() {
            [] => String::new(),
            [one] => one.clone(),
            _ => "several".to_string(),
        };
        if coding.is_empty() {
            headers.remove(header::CONTENT_ENCODING);
            return Ok(Source::Plain(body));
        }
        let bytes = StreamReader::new(body.into_data_stream());
        use async_compression::tokio::bufread as dec;
        // Concatenated members (gzip members, zstd frames) are one body:
        // all are read, not just the first.
        let decoded: Decoded = match coding.as_str() {
            "gzip" | "x-gzip" => {
                let mut d = dec::GzipDecoder::new(bytes);
                d.multiple_members(true);
                Box::pin(ReaderStream::new(d))
            }
            // HTTP's "deflate" is the zlib format (RFC 9110 8.4.1.2).
            "deflate" => Box::pin(ReaderStream::new(dec::ZlibDecoder::new(bytes))),
            "br" => Box::pin(ReaderStream::new(dec::BrotliDecoder::new(bytes))),
            "zstd" => {
                let mut d = dec::ZstdDecoder::new(bytes);
                d.multiple_members(true);
                Box::pin(ReaderStream::new(d))
            }
            _ => {
                tracing::warn!(
                    coding,
                    "upstream answered in a content coding the gateway cannot read"
                );
                return Err(ProxyError::Upstream);
            }
        };
        headers.remove(header::CONTENT_ENCODING);
        Ok(Source::Decoded(decoded))
    }

    async fn next(&mut self, read_timeout: Duration) -> Next {
        let read = async {
            match self {
                Source::Plain(body) => loop {
                    match body.frame().await {
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(data) => return Some(Ok(data)),
                            Err(_) => continue,
                        },
                        Some(Err(e)) => return Some(Err(e)),
                        None => return None,
                    }
                },
                Source::Decoded(s) => s.try_next().await.transpose(),
            }
        };
        match tokio::time::timeout(read_timeout, read).await {
            Ok(Some(Ok(data))) => Next::Data(data),
            Ok(None) => Next::End,
            Ok(Some(Err(_))) | Err(_) => Next::Failed,
        }
    }
}

/// The error a cut response ends with: the client sees a broken body, not
/// a clean end (U4a).
async fn cut() -> io::Error {
    // hyper drops a connection whose body fails together with its
    // unflushed writes: when the bytes before the failure were read in the
    // same poll, the client would get nothing (not even the head). Going
    // pending once lets it flush.
    tokio::task::yield_now().await;
    io::Error::other("upstream answer failed")
}

/// The streaming relay's state. Dropped before the stream ends (the client
/// went away), it bills what was produced (U4, U4a).
struct SseRelay {
    source: Source,
    meter: SseMeter,
    billing: Option<Billing>,
    read_timeout: Duration,
    finished: bool,
    /// An error event went out: the next poll cuts the stream.
    cut_next: bool,
}

impl SseRelay {
    fn settle(&mut self, status: RequestStatus) {
        if let Some(b) = self.billing.take() {
            b.bill(self.meter.usage(), self.meter.text_bytes(), status);
        }
    }

    /// M5: an error event means the upstream failed: not billed, and the
    /// client's stream is cut after it.
    fn failed_in_band(&mut self) -> bool {
        if !self.meter.error() {
            return false;
        }
        if let Some(b) = self.billing.take() {
            b.in_band_error();
        }
        true
    }
}

impl Drop for SseRelay {
    fn drop(&mut self) {
        if self.billing.is_some() {
            tracing::debug!("client left mid-stream; billing what was produced");
            self.settle(RequestStatus::Cancelled);
        }
    }
}

/// M5: the bytes that carry an error event reach the client; then the
/// stream is cut, as for any upstream failure (U4a).
async fn cut_after(mut r: SseRelay, out: Bytes) -> (io::Result<Bytes>, SseRelay) {
    if out.is_empty() {
        r.finished = true;
        return (Err(cut().await), r);
    }
    r.cut_next = true;
    (Ok(out), r)
}

/// P2: pass events on as they arrive, reading usage as they pass.
pub fn relay_stream(
    source: Source,
    billing: Billing,
    inject: bool,
    read_timeout: Duration,
) -> Body {
    let relay = SseRelay {
        source,
        meter: SseMeter::new(inject),
        billing: Some(billing),
        read_timeout,
        finished: false,
        cut_next: false,
    };
    let stream = futures_util::stream::unfold(relay, |mut r| async move {
        if r.finished {
            return None;
        }
        if r.cut_next {
            r.finished = true;
            return Some((Err(cut().await), r));
        }
        loop {
            match r.source.next(r.read_timeout).await {
                Next::Data(data) => {
                    let out = r.meter.push(data);
                    if r.failed_in_band() {
                        return Some(cut_after(r, out).await);
                    }
                    if r.meter.done() {
                        // Settle before `[DONE]` reaches the client (B6).
                        r.settle(RequestStatus::Completed);
                    }
                    if !out.is_empty() {
                        return Some((Ok::<Bytes, io::Error>(out), r));
                    }
                }
                Next::End => {
                    let tail = r.meter.finish();
                    if r.failed_in_band() {
                        return Some(cut_after(r, tail).await);
                    }
                    r.finished = true;
                    r.settle(RequestStatus::Completed);
                    return (!tail.is_empty()).then_some((Ok(tail), r));
                }
                Next::Failed => {
                    // U4: an upstream failure is not billed; the client sees
                    // a cut stream, not a clean end.
                    r.billing = None;
                    r.finished = true;
                    return Some((Err(cut().await), r));
                }
            }
        }
    });
    Body::from_stream(stream)
}

/// A non-streamed answer's relay (M8): chunks pass on as they arrive, one
/// held back until the next arrives, so the settlement precedes the last
/// byte (B6). Dropped early (the client left), the rest is read and billed
/// in the background (M9).
struct JsonRelay {
    source: Source,
    meter: JsonMeter,
    /// `None` for an answer that is not billed (a 4xx).
    billing: Option<Billing>,
    held: Option<Bytes>,
    read_timeout: Duration,
    finished: bool,
    tasks: TaskTracker,
}

impl JsonRelay {
    fn settle(&mut self, status: RequestStatus) {
        let meter = std::mem::take(&mut self.meter);
        if let Some(b) = self.billing.take() {
            let facts = meter.finish();
            if facts.is_error_body() {
                // M5: a 200 error body is an upstream failure.
                b.in_band_error();
                return;
            }
            let usage = facts
                .usage
                .as_deref()
                .and_then(super::meter::read_usage_bytes);
            b.bill(usage, facts.generated_text_bytes as usize, status);
        }
    }
}

impl Drop for JsonRelay {
    fn drop(&mut self) {
        if self.finished || self.billing.is_none() {
            return;
        }
        // M9: the upstream did the work; read its answer to the end (within
        // the read timeout) and bill it.
        let mut rest = JsonRelay {
            source: std::mem::replace(
                &mut self.source,
                Source::Decoded(Box::pin(futures_util::stream::empty())),
            ),
            meter: std::mem::take(&mut self.meter),
            billing: self.billing.take(),
            held: None,
            read_timeout: self.read_timeout,
            finished: false,
            tasks: self.tasks.clone(),
        };
        self.tasks.spawn(async move {
            loop {
                match rest.source.next(rest.read_timeout).await {
                    Next::Data(data) => rest.meter.push(&data),
                    Next::End => {
                        rest.settle(RequestStatus::ClientClosed);
                        break;
                    }
                    Next::Failed => {
                        // Not billed: the hold is released.
                        drop(rest.billing.take());
                        break;
                    }
                }
            }
        });
    }
}

/// M8: relay a non-streamed answer as it arrives, metering it in bounded
/// memory; `billing` is `None` for an answer that is passed on unbilled.
pub fn relay_whole(
    source: Source,
    billing: Option<Billing>,
    read_timeout: Duration,
    tasks: TaskTracker,
) -> Body {
    let relay = JsonRelay {
        source,
        meter: JsonMeter::default(),
        billing,
        held: None,
        read_timeout,
        finished: false,
        tasks,
    };
    let stream = futures_util::stream::unfold(relay, |mut r| async move {
        if r.finished {
            return None;
        }
        loop {
            match r.source.next(r.read_timeout).await {
                Next::Data(data) => {
                    if r.billing.is_some() {
                        r.meter.push(&data);
                    }
                    if let Some(prev) = r.held.replace(data) {
                        return Some((Ok::<Bytes, io::Error>(prev), r));
                    }
                }
                Next::End => {
                    r.settle(RequestStatus::Completed);
                    r.finished = true;
                    return r.held.take().map(|last| (Ok(last), r));
                }
                Next::Failed => {
                    r.billing = None;
                    r.finished = true;
                    return Some((Err(cut().await), r));
                }
            }
        }
    });
    Body::from_stream(stream.boxed())
}
