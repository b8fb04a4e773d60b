//! Calls and waits that several test files repeat, on top of `common`
//! (which a test file declares as `mod common;` before including this one
//! with `#[path = "common/calls.rs"] mod calls;`).
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use tollgate::billing::{deposit, DepositKind};
use tollgate::clock::SystemClock;
use tollgate::money::Nanos;
use tollgate::store::Store;
use tollgate::wallet::{WalletHandle, WalletRegistry};

use crate::common::{chat_body, wait_until, Api, Gateway, User};

/// The status of a `gpt-4o-mini` chat (`chat_body`) sent with `knobs`.
pub async fn chat_status(api: &Api, key: &str, knobs: &[(&str, &str)]) -> StatusCode {
    api.chat(key, &chat_body("gpt-4o-mini"), knobs)
        .await
        .status()
}

/// The status of a GET as `bearer` (or anonymously).
pub async fn get_status(api: &Api, path: &str, bearer: Option<&str>) -> StatusCode {
    api.get(path, bearer).await.status()
}

/// The status of a DELETE as `bearer` (or anonymously).
pub async fn delete_status(api: &Api, path: &str, bearer: Option<&str>) -> StatusCode {
    api.delete(path, bearer).await.status()
}

/// The response's content type, as text.
pub fn content_type(r: &Response) -> &str {
    r.headers()["content-type"].to_str().unwrap()
}

/// A GET's JSON body as `bearer` sees it, whatever the status.
pub async fn get_json(api: &Api, path: &str, bearer: &str) -> Value {
    api.get(path, Some(bearer)).await.json().await.unwrap()
}

/// The `error.code` of an error body.
pub async fn error_code(r: Response) -> Value {
    r.json::<Value>().await.unwrap()["error"]["code"].take()
}

/// A POST to the gateway as `bearer`, for what `Api::post` does not build
/// (raw bodies, extra headers); `send` sends it.
pub fn post_as(api: &Api, path: &str, bearer: &str) -> RequestBuilder {
    api.http
        .post(format!("{}{path}", api.url))
        .bearer_auth(bearer)
}

/// Sends `request`; a transport error fails the test.
pub async fn send(request: RequestBuilder) -> Response {
    request.send().await.unwrap()
}

/// An operator deposit of `amount` (stripe) to `user`'s wallet under the
/// idempotency key `idem`; the response, whatever its status.
pub async fn stripe_deposit(api: &Api, idem: &str, user: &User, amount: &str) -> Response {
    let body = json!({"user_id": user.id, "amount": amount, "kind": "stripe"});
    api.deposit_raw(idem, &body).await
}

/// Waits until no hold is outstanding in the reconciliation.
pub async fn holds_released(api: &Api, what: &str) {
    wait_until(what, || async {
        api.reconcile().await["holds_total"] == "0.00"
    })
    .await;
}

/// The gateway's Prometheus exposition.
pub async fn metrics(g: &Gateway) -> String {
    let url = format!("http://{}/metrics", g.running.metrics_addr);
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// A wallet registry on the system clock whose flushes may fail for 5 s.
pub fn wallets(
    store: Arc<dyn Store>,
    threshold: Nanos,
    flush_interval: Duration,
    nonce: u64,
) -> WalletRegistry {
    let bound = Duration::from_secs(5);
    WalletRegistry::new(
        store,
        threshold,
        flush_interval,
        bound,
        nonce,
        Arc::new(SystemClock),
    )
}

/// The wallet `id` of `registry`, with `amount` deposited once (stripe).
pub async fn funded_wallet(registry: &WalletRegistry, id: &str, amount: Nanos) -> WalletHandle {
    let w = registry.get(id).await.unwrap();
    deposit(&w, amount, DepositKind::Stripe, "r", "d1")
        .await
        .unwrap();
    w
}
