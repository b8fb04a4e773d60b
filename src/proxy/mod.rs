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
//! Beside this file, in the order a request meets them: `request` (the
//! client's key, P6b; the body read and probed; the one edit it gets,
//! M10), `forward` (the header rules of P6, M1), `upstream` (the seam to
//! the upstreams: `Upstream::send` and the HTTP/1.1 client behind it),
//! `relay` (the answer passed on as it arrives and decoded, M1, M8, M9),
//! `meter` (usage read from answers as they pass, M2-M5, M11), `bill`
//! (usage resolved, bounded and settled, M2-M4), `error` (the
//! OpenAI-shaped errors).

mod bill;
pub mod error;
pub mod forward;
pub mod meter;
mod relay;
pub mod request;
pub mod upstream;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;

pub use error::ProxyError;

use crate::auth::KeyEntry;
use crate::limits::RateState;
use crate::metrics;
use crate::pricing::ModelPrice;
use crate::store::KeyStatus;
use crate::wallet::WalletError;
use crate::App;
use bill::Billing;
use meter::Bounds;
use relay::{relay_stream, relay_whole, Source};
use request::{
    client_key, has_non_text_input, read_body, strip_client_key, with_include_usage, Probe,
};
use upstream::UpstreamResponse;

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
pub async fn handle(app: &Arc<App>, route: Route, req: Request) -> Response {
    let started = Instant::now();
    let request_id = app.ids.next();
    // Formatted once: the ledger reference and the response header.
    let reference = app.ids.format(request_id);
    let mut rate = None;
    let mut resp = match phases(app, route, request_id, &reference, req, &mut rate).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    };
    // Q2: every response of a key with rate limits says where it stands.
    if let Some(state) = rate {
        state.write_headers(resp.headers_mut());
    }
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
    let key = client_key(headers).ok_or(ProxyError::InvalidKey)?;
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

async fn phases(
    app: &Arc<App>,
    route: Route,
    request_id: u64,
    reference: &str,
    req: Request,
    rate: &mut Option<RateState>,
) -> Result<Response, ProxyError> {
    let (mut parts, body) = req.into_parts();

    // 1-2. auth and gate.
    let entry = admit(app, &parts.headers).await?;
    strip_client_key(&mut parts.headers);

    // 5a. rate limits (Q2), from the key's own counters, before any work.
    if let Some(limiter) = &entry.limits.rate {
        let (state, admitted) = limiter.admit(app.clock.now());
        *rate = Some(state);
        if !admitted {
            return Err(ProxyError::RateLimited {
                retry_after_s: state.retry_after_s(),
            });
        }
    }

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
    let bounds = hold_bounds(app, route, &probe, price, &body);
    let estimate = price.max_cost(bounds.max_input, bounds.max_output);

    // 4-5. hold (B6) and spend limits (Q1), decided together by the
    // wallet's actor: the key's and the member's period spend plus their
    // holds plus this one must stay within every limit.
    let charge = entry.charge();
    let hold = match entry
        .wallet
        .hold_charged(request_id, estimate, Some(&charge))
        .await
    {
        Ok(h) => h,
        Err(WalletError::QuotaExceeded { resets_at }) => {
            metrics::hold(false);
            return Err(ProxyError::quota(resets_at, app.clock.now()));
        }
        Err(e) => {
            metrics::hold(false);
            return Err(e.into());
        }
    };
    metrics::hold(true);

    // Ask for usage in streams (P2); hide it again if the client did not.
    let inject = probe.needs_usage_asked();
    let streams = probe.streams();
    let billing = Billing {
        hold,
        pricing: pricing.clone(),
        model: model.to_string(),
        reference: reference.to_owned(),
        entry: entry.clone(),
        request_body: body.clone(),
        route,
        bounds: Bounds {
            // M3: input within the model's context window (the gateway's
            // default where the pricing file sets none, so no count is
            // unbounded); output within the hold's own bound.
            max_input: price
                .context_window
                .unwrap_or(app.config.default_context_window),
            max_output: bounds.max_output,
        },
        clock: app.clock.clone(),
    };
    let forwarded = if inject {
        // M10: inserted into the client's bytes, never re-encoded.
        with_include_usage(&body)
            .map(Bytes::from)
            .ok_or(ProxyError::InvalidRequest(
                "The request body must be a JSON object of the OpenAI API.",
            ))?
    } else {
        body
    };

    // 6-8. forward, meter, settle.
    if streams {
        return exchange(app, route, parts.headers, forwarded, billing, inject).await;
    }
    // M9: a non-streamed call is the upstream's work whether or not the
    // client waits for it. hyper drops a handler whose client has gone, so
    // the exchange runs on its own task: if the client left, the answer
    // it hands over is dropped, and its relay reads the rest and bills it.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let detached = app.clone();
    app.tasks.spawn(async move {
        let answer = exchange(&detached, route, parts.headers, forwarded, billing, false).await;
        let _ = tx.send(answer);
    });
    rx.await.unwrap_or(Err(ProxyError::Upstream))
}

/// Phase 6 and the start of 7-8: the request to the model's upstream, and
/// its answer set up to be metered and settled as it passes.
async fn exchange(
    app: &App,
    route: Route,
    headers: HeaderMap,
    body: Bytes,
    billing: Billing,
    inject: bool,
) -> Result<Response, ProxyError> {
    let pricing = billing.pricing.clone();
    let price = pricing.get(&billing.model);
    let base = price
        .and_then(|p| p.upstream_url.as_deref())
        .unwrap_or(&app.config.upstream_url);
    let auth = price.and_then(|p| p.upstream_auth.as_ref());
    let sent = Instant::now();
    let mut waiting = Unanswered(Some(billing));
    let upstream = match app
        .upstream
        .send(base, auth, route.path(), headers, body)
        .await
    {
        Ok(u) => u,
        Err(e) => {
            // Not billed (U4, P5): the hold is released.
            drop(waiting.0.take());
            return Err(e);
        }
    };
    metrics::upstream_latency(route.label(), sent.elapsed());
    let Some(billing) = waiting.0.take() else {
        return Err(ProxyError::Upstream);
    };
    answer(app, billing, upstream, inject)
}

/// A call whose client left while the upstream was working on it, before
/// its answer began (a stream: hyper drops the handler): the prompt was
/// sent and processed, so it is billed by the prompt's estimate (U4a).
struct Unanswered(Option<Billing>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            tracing::debug!("client left before the upstream answered; billing the prompt");
            b.bill(None, 0, crate::store::RequestStatus::Cancelled);
        }
    }
}

/// The hold's bounds in tokens (B5a, M6, M7): input by the body's size in
/// bytes for text (a byte-level tokenizer never yields more tokens than
/// bytes), by the context window for a request with image, audio, file or
/// video input; output by the request's limit clamped to the model's.
fn hold_bounds(
    app: &App,
    route: Route,
    probe: &Probe<'_>,
    price: &ModelPrice,
    body: &[u8],
) -> Bounds {
    let window = price
        .context_window
        .unwrap_or(app.config.default_context_window);
    let max_input = if has_non_text_input(body) {
        window
    } else {
        (body.len() as u64).min(price.context_window.unwrap_or(u64::MAX))
    };
    let max_output = if route.generates() {
        probe.max_output(
            price.max_output_tokens,
            app.config.default_max_output_tokens,
        )
    } else {
        0
    };
    Bounds {
        max_input,
        max_output,
    }
}

/// Phases 7 and 8 for the upstream's answer: passed on as it arrives,
/// metered and settled on the way; an upstream failure is not billed.
fn answer(
    app: &App,
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
    let mut headers = upstream.headers;
    forward::strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    let source = Source::new(upstream.body, &mut headers)?;
    let is_sse = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.get(..17)
                .is_some_and(|t| t.eq_ignore_ascii_case("text/event-stream"))
        });
    let read_timeout = app.upstream.read_timeout();

    // 7-8. meter and settle.
    let body = if !status.is_success() {
        // A 4xx from the upstream is the client's error, passed on, not
        // billed: the hold is released now.
        drop(billing);
        relay_whole(source, None, read_timeout, app.tasks.clone())
    } else if is_sse {
        relay_stream(source, billing, inject, read_timeout)
    } else {
        relay_whole(source, Some(billing), read_timeout, app.tasks.clone())
    };
    Ok(respond(status, headers, body))
}

fn respond(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// `GET /v1/models`: the priced models, for any active key (not billed).
async fn models(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    // Auth as on every proxied call (K4), without the balance gate: listing
    // models costs nothing.
    let key = match client_key(&headers) {
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
