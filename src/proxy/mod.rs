//! THE HOT PATH: one proxied OpenAI call, phase by phase, in the order it
//! happens: auth -> gate -> price -> hold -> forward -> meter -> settle ->
//! log. Read `handle` top to bottom to follow a request from socket to
//! settlement.
//!
//! The hold is a `#[must_use]` value: every early return drops it, and a
//! dropped hold releases itself, so no path can leak a reservation. The
//! settlement is cast to the wallet before the response's last event
//! reaches the client (B6).
//!
//! Beside this file: `forward` (the header rules of P6), `upstream` (the
//! seam to the upstreams: `Upstream::send` and the HTTP/1.1 client behind
//! it), `meter` (usage read from responses as they pass), `error` (the
//! OpenAI-shaped errors).

pub mod error;
pub mod forward;
pub mod meter;
pub mod upstream;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;

pub use error::ProxyError;

use crate::auth::KeyEntry;
use crate::metrics;
use crate::pricing::{Pricing, Usage};
use crate::store::{KeyStatus, UsageFacts};
use crate::wallet::Hold;
use crate::App;
use meter::{estimate_tokens, usage_of_json, SseMeter};
use upstream::{UpstreamBody, UpstreamResponse};

/// The billed OpenAI endpoints (P1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Chat,
    Completions,
    Embeddings,
}

impl Route {
    pub fn path(self) -> &'static str {
        match self {
            Route::Chat => "/v1/chat/completions",
            Route::Completions => "/v1/completions",
            Route::Embeddings => "/v1/embeddings",
        }
    }

    /// The billed endpoint at `path`, if it is one.
    pub fn of_path(path: &str) -> Option<Route> {
        [Route::Chat, Route::Completions, Route::Embeddings]
            .into_iter()
            .find(|r| r.path() == path)
    }

    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Route::Chat => "chat",
            Route::Completions => "completions",
            Route::Embeddings => "embeddings",
        }
    }

    fn generates(self) -> bool {
        self != Route::Embeddings
    }
}

/// The proxy's routes. In `serve`, the billed `POST`s are taken before
/// the router (`server::Front`); these serve other callers of the router.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route(Route::Chat.path(), post(chat))
        .route(Route::Completions.path(), post(completions))
        .route(Route::Embeddings.path(), post(embeddings))
        .route("/v1/models", get(models))
}

async fn chat(State(app): State<Arc<App>>, req: Request) -> Response {
    handle(&app, Route::Chat, req).await
}

async fn completions(State(app): State<Arc<App>>, req: Request) -> Response {
    handle(&app, Route::Completions, req).await
}

async fn embeddings(State(app): State<Arc<App>>, req: Request) -> Response {
    handle(&app, Route::Embeddings, req).await
}

/// One proxied call; the log phase runs on success and on error alike.
pub async fn handle(app: &App, route: Route, req: Request) -> Response {
    let started = Instant::now();
    let request_id = app.ids.next();
    // Formatted once: the ledger reference and the response header.
    let reference = app.ids.format(request_id);
    let mut resp = match phases(app, route, request_id, &reference, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&reference) {
        resp.headers_mut().insert("x-request-id", v);
    }
    metrics::proxy_request(route.label(), resp.status().as_u16(), started.elapsed());
    tracing::debug!(
        route = route.label(),
        status = resp.status().as_u16(),
        "proxied"
    );
    resp
}

/// Phases 1 and 2, before the body is read: the key (from the cache; a
/// miss asks the store once, K4, K5) and the wallet's suspended flag, read
/// without messaging anyone (B2). On a cache hit this neither awaits nor
/// allocates (measured: benches/alloc.rs).
pub async fn admit(app: &App, headers: &HeaderMap) -> Result<Arc<KeyEntry>, ProxyError> {
    // 1. auth.
    let key = bearer(headers).ok_or(ProxyError::InvalidKey)?;
    let entry = app
        .keys
        .lookup(key.as_bytes(), &*app.store, &app.wallets)
        .await?;
    match entry.status() {
        KeyStatus::Active => {}
        KeyStatus::Archived => return Err(ProxyError::KeyArchived),
        KeyStatus::Deleted => return Err(ProxyError::InvalidKey),
    }
    // 2. gate.
    if entry.wallet.is_suspended() {
        metrics::hold(false);
        return Err(ProxyError::InsufficientBalance);
    }
    Ok(entry)
}

/// The parts of an OpenAI request the gateway reads; the rest passes
/// through untouched.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    best_of: Option<u64>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

impl<'a> Probe<'a> {
    /// The request body read as an object of the OpenAI API.
    fn of(body: &'a [u8]) -> Result<Probe<'a>, ProxyError> {
        // An object, not any JSON: serde would fill `Probe` from an array too.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ProxyError::InvalidRequest(
                "The request body must be a JSON object of the OpenAI API.",
            ));
        }
        serde_json::from_slice(body).map_err(|_| {
            ProxyError::InvalidRequest("The request body must be a JSON object of the OpenAI API.")
        })
    }

    /// Output tokens the request may generate, over all its choices: its
    /// own limit, else the model's, else the gateway's default.
    fn max_output(&self, model_max: Option<u64>, default: u64) -> u64 {
        let per_choice = self
            .max_completion_tokens
            .or(self.max_tokens)
            .or(model_max)
            .unwrap_or(default);
        per_choice.saturating_mul(self.n.max(self.best_of).unwrap_or(1).max(1))
    }

    /// A stream whose client did not ask for usage: the gateway asks for
    /// it (P2), and hides the usage chunk from the client again.
    fn needs_usage_asked(&self) -> bool {
        let streaming = self.stream.unwrap_or(false);
        let client_wants_usage = self
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        streaming && !client_wants_usage
    }
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

async fn phases(
    app: &App,
    route: Route,
    request_id: u64,
    reference: &str,
    req: Request,
) -> Result<Response, ProxyError> {
    let (parts, body) = req.into_parts();

    // 1-2. auth and gate.
    let entry = admit(app, &parts.headers).await?;

    // Body: bounded before it is read whole (P4).
    let body = read_body(&parts.headers, body, app.config.max_body_bytes).await?;
    let probe = Probe::of(&body)?;
    let model = probe
        .model
        .as_deref()
        .ok_or(ProxyError::InvalidRequest("The request has no `model`."))?;

    // 3. price: an unpriced model is never forwarded (P1).
    let pricing = app.pricing.load_full();
    let price = pricing.get(model).ok_or(ProxyError::ModelNotFound)?;
    let max_output = if route.generates() {
        probe.max_output(
            price.max_output_tokens,
            app.config.default_max_output_tokens,
        )
    } else {
        0
    };
    // A byte-level tokenizer never yields more tokens than bytes.
    let estimate = price.max_cost(body.len() as u64, max_output);

    // 4. hold (B6).
    let hold = match entry.wallet.hold(request_id, estimate).await {
        Ok(h) => h,
        Err(e) => {
            metrics::hold(false);
            return Err(e.into());
        }
    };
    metrics::hold(true);

    // Ask for usage in streams (P2); hide it again if the client did not.
    let inject = probe.needs_usage_asked();
    let billing = Billing {
        hold,
        pricing: pricing.clone(),
        model: model.to_string(),
        reference: reference.to_owned(),
        entry: entry.clone(),
        request_body: body.clone(),
    };
    let forwarded = if inject {
        with_include_usage(&body)?
    } else {
        body
    };

    // 5. quota: per key / per member limits hook in here (SPEC Q1, Q2).

    // 6. forward.
    let base = price
        .upstream_url
        .as_deref()
        .unwrap_or(&app.config.upstream_url);
    let sent = Instant::now();
    let upstream = app
        .upstream
        .send(base, route.path(), parts.headers, forwarded)
        .await?;
    metrics::upstream_latency(route.label(), sent.elapsed());
    answer(app, route, billing, upstream, inject).await
}

/// Phases 7 and 8 for the upstream's answer: metered and settled, then
/// passed on (a stream as it arrives); an upstream failure is not billed.
async fn answer(
    app: &App,
    route: Route,
    billing: Billing,
    upstream: UpstreamResponse,
    inject: bool,
) -> Result<Response, ProxyError> {
    let status = upstream.status;
    if status.is_server_error() {
        // P5, U4: not billed; dropping `billing` releases the hold.
        return Err(ProxyError::Upstream);
    }
    // The upstream's own map, stripped in place.
    let upstream_body = upstream.body;
    let mut headers = upstream.headers;
    forward::strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    let is_sse = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));

    // 7-8. meter and settle.
    if status.is_success() && is_sse {
        let body = relay_stream(upstream_body, billing, inject, app.upstream.read_timeout());
        return Ok(respond(status, headers, body));
    }
    let bytes = read_upstream(upstream_body, app).await?;
    if status.is_success() {
        let usage = usage_of_json(&bytes).unwrap_or_else(|| {
            tracing::warn!(
                route = route.label(),
                "upstream reported no usage; billing an estimate"
            );
            billing.estimate(bytes.len())
        });
        billing.settle(usage);
    }
    // A 4xx from the upstream is the client's error, passed on, not billed.
    Ok(respond(status, headers, Body::from(bytes)))
}

fn respond(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// `Authorization: Bearer <key>`, scheme case-insensitive.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim())
        .filter(|k| !k.is_empty())
}

async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ProxyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::TooLarge);
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ProxyError::TooLarge),
        Err(_) => Err(ProxyError::InvalidRequest(
            "The request body could not be read.",
        )),
    }
}

async fn read_upstream(body: UpstreamBody, app: &App) -> Result<Bytes, ProxyError> {
    let read = Limited::new(body, app.config.max_response_bytes).collect();
    match tokio::time::timeout(app.upstream.read_timeout(), read).await {
        Err(_) => Err(ProxyError::UpstreamTimeout),
        Ok(Err(_)) => Err(ProxyError::Upstream),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// The body with `stream_options.include_usage = true`.
fn with_include_usage(body: &[u8]) -> Result<Bytes, ProxyError> {
    let mut map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|_| ProxyError::InvalidRequest("The request body must be a JSON object."))?;
    let options = map
        .entry("stream_options")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    if !options.is_object() {
        *options = serde_json::Value::Object(Default::default());
    }
    if let Some(o) = options.as_object_mut() {
        o.insert("include_usage".into(), serde_json::Value::Bool(true));
    }
    serde_json::to_vec(&map)
        .map(Bytes::from)
        .map_err(|_| ProxyError::InvalidRequest("The request body could not be re-encoded."))
}

/// Everything needed to settle one request once its usage is known.
struct Billing {
    hold: Hold,
    pricing: Arc<Pricing>,
    model: String,
    reference: String,
    entry: Arc<KeyEntry>,
    request_body: Bytes,
}

impl Billing {
    fn settle(self, usage: Usage) {
        // The price was there at admission; a reload that dropped the model
        // since still bills at the price it was admitted under.
        let cost = self
            .pricing
            .get(&self.model)
            .map(|p| p.cost(&usage))
            .unwrap_or_default();
        let facts = UsageFacts {
            key_id: self.entry.key_id.to_string(),
            member_id: self.entry.member_id.to_string(),
            team_id: self.entry.team_id.as_deref().map(str::to_string),
            model: self.model,
            usage,
        };
        self.hold.settle(cost, self.reference, facts);
    }

    /// U4: usage by the 4-bytes-a-token rule, when the upstream never said.
    fn estimate(&self, output_text_bytes: usize) -> Usage {
        Usage {
            input_tokens: estimate_tokens(prompt_bytes(&self.request_body)),
            cached_tokens: 0,
            output_tokens: estimate_tokens(output_text_bytes),
        }
    }
}

/// Bytes of prompt text in an OpenAI request: message contents (strings or
/// text parts), `prompt` or `input`.
fn prompt_bytes(body: &[u8]) -> usize {
    fn text_len(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::String(s) => s.len(),
            serde_json::Value::Array(a) => a.iter().map(text_len).sum(),
            serde_json::Value::Object(o) => o
                .get("content")
                .or_else(|| o.get("text"))
                .map_or(0, text_len),
            _ => 0,
        }
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return body.len();
    };
    ["messages", "prompt", "input"]
        .iter()
        .filter_map(|k| v.get(*k))
        .map(text_len)
        .sum()
}

/// The streaming relay's state. Dropped before the stream ends (the client
/// went away), it bills what was produced (U4).
struct Relay {
    upstream: UpstreamBody,
    meter: SseMeter,
    billing: Option<Billing>,
    read_timeout: Duration,
    finished: bool,
}

impl Relay {
    fn settle(&mut self) {
        if let Some(b) = self.billing.take() {
            let usage = self
                .meter
                .usage()
                .unwrap_or_else(|| b.estimate(self.meter.text_bytes()));
            b.settle(usage);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if self.billing.is_some() {
            tracing::debug!("client left mid-stream; billing what was produced");
            self.settle();
        }
    }
}

/// P2: pass events on as they arrive, reading usage as they pass.
fn relay_stream(
    upstream: UpstreamBody,
    billing: Billing,
    inject: bool,
    read_timeout: Duration,
) -> Body {
    let relay = Relay {
        upstream,
        meter: SseMeter::new(inject),
        billing: Some(billing),
        read_timeout,
        finished: false,
    };
    let stream = futures_util::stream::unfold(relay, |mut r| async move {
        if r.finished {
            return None;
        }
        loop {
            let frame = tokio::time::timeout(r.read_timeout, r.upstream.frame()).await;
            match frame {
                Ok(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let out = r.meter.push(data);
                    if r.meter.done() {
                        // Settle before `[DONE]` reaches the client (B6).
                        r.settle();
                    }
                    if !out.is_empty() {
                        return Some((Ok::<Bytes, std::io::Error>(out), r));
                    }
                }
                Ok(None) => {
                    let tail = r.meter.finish();
                    r.settle();
                    r.finished = true;
                    return (!tail.is_empty()).then_some((Ok(tail), r));
                }
                Ok(Some(Err(_))) | Err(_) => {
                    // U4: an upstream failure is not billed; the client sees a
                    // cut stream, not a clean end.
                    r.billing = None;
                    r.finished = true;
                    // hyper drops a connection whose body fails together with
                    // its unflushed writes: when the events before the failure
                    // were read in the same poll, the client would get nothing
                    // (not even the head). Going pending once lets it flush.
                    tokio::task::yield_now().await;
                    return Some((Err(std::io::Error::other("upstream stream failed")), r));
                }
            }
        }
    });
    Body::from_stream(stream)
}

/// `GET /v1/models`: the priced models, for any active key (not billed).
async fn models(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    // Auth as on every proxied call (K4), without the balance gate: listing
    // models costs nothing.
    let key = match bearer(&headers) {
        Some(k) => k,
        None => return ProxyError::InvalidKey.into_response(),
    };
    match app
        .keys
        .lookup(key.as_bytes(), &*app.store, &app.wallets)
        .await
    {
        Ok(e) => match e.status() {
            KeyStatus::Active => {}
            KeyStatus::Archived => return ProxyError::KeyArchived.into_response(),
            KeyStatus::Deleted => return ProxyError::InvalidKey.into_response(),
        },
        Err(e) => return ProxyError::from(e).into_response(),
    }
    let pricing = app.pricing.load();
    let data: Vec<serde_json::Value> = pricing
        .model_names()
        .into_iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "tollgate"}))
        .collect();
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}
