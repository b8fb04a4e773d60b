//! N1-N3 through real sockets: a gateway, and a webhook receiver (a small
//! axum server in the test) that records every delivery and answers the
//! statuses it is told to. Signatures are checked with ring's HMAC,
//! independent of the gateway's (the hmac crate).
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/process.rs"]
mod process;
#[path = "common/redis.rs"]
mod redis_harness;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode as AxStatus};
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use common::*;

/// What a receiver saw: each delivery's headers and body.
#[derive(Clone, Default)]
pub struct Receiver {
    pub seen: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    /// Statuses to answer, in order; then 200.
    pub answers: Arc<Mutex<VecDeque<u16>>>,
    pub url: String,
}

impl Receiver {
    pub async fn start() -> Receiver {
        Receiver::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    pub fn start_on(listener: TcpListener) -> Receiver {
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let r = Receiver {
            url,
            ..Receiver::default()
        };
        let state = r.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    state.seen.lock().unwrap().push((headers, body));
                    let code = state.answers.lock().unwrap().pop_front().unwrap_or(200);
                    AxStatus::from_u16(code).unwrap()
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        r
    }

    pub fn seen(&self) -> Vec<(HeaderMap, String)> {
        self.seen.lock().unwrap().clone()
    }

    /// Bodies of the deliveries of type `kind`.
    pub fn of_type(&self, kind: &str) -> Vec<(HeaderMap, Value)> {
        self.seen()
            .into_iter()
            .map(|(h, b)| (h, serde_json::from_str::<Value>(&b).unwrap()))
            .filter(|(_, v)| v["type"] == kind)
            .collect()
    }
}

/// A gateway that may call receivers on 127.0.0.1, polls often, and
/// retries after 50 ms, 100 ms.
pub async fn gateway() -> Gateway {
    spawn_gateway_with(|c| {
        c.notify.allow_private = true;
        c.public_url = "https://gw.example.com".into();
        c.notify.poll = Duration::from_millis(20);
        c.notify.retry_delays = vec![Duration::from_millis(50), Duration::from_millis(100)];
    })
    .await
}

/// Standard Webhooks verification, with ring: the signature of
/// `id.timestamp.body` under the secret's decoded bytes.
pub fn verify(secret: &str, headers: &HeaderMap, body: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let id = headers["webhook-id"].to_str().unwrap();
    let ts = headers["webhook-timestamp"].to_str().unwrap();
    let sig = headers["webhook-signature"].to_str().unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let tag = ring::hmac::sign(&key, format!("{id}.{ts}.{body}").as_bytes());
    sig.split(' ')
        .any(|s| s == format!("v1,{}", b64.encode(tag.as_ref())))
}

/// Create an endpoint at `path` (`/api/teams/T/webhooks` or
/// `/api/me/webhooks`); returns its JSON (with the secret).
pub async fn hook(g: &Gateway, path: &str, who: &User, url: &str, events: &[&str]) -> Value {
    let r = g
        .post(
            path,
            Some(&who.token),
            &json!({"url": url, "events": events}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    r.json().await.unwrap()
}

/// With `WEBHOOK_CAPTURE=path`, write one delivery for
/// scripts/verify_webhook.py (the Python reference verifier).
fn capture(secret: &str, (h, body): &(HeaderMap, String)) {
    let Ok(path) = std::env::var("WEBHOOK_CAPTURE") else {
        return;
    };
    let headers: serde_json::Map<String, Value> =
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .iter()
            .map(|n| ((*n).to_string(), json!(h[*n].to_str().unwrap())))
            .collect();
    let cap = json!({"secret": secret, "headers": headers, "body": body});
    std::fs::write(path, cap.to_string()).unwrap();
}

pub async fn log(g: &Gateway, path: &str, who: &User) -> Vec<Value> {
    let r = g.get(path, Some(&who.token)).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<Vec<Value>>().await.unwrap()
}

#[tokio::test]
async fn deliveries_are_signed_per_standard_webhooks() {
    let g = gateway().await;
    let rx = Receiver::start().await;
    let (a, _) = g.funded("a@example.com", "10").await;
    let team = g.team(&a, "T").await;
    let path = format!("/api/teams/{team}/webhooks");
    let w = hook(&g, &path, &a, &rx.url, &["member.joined", "key.created"]).await;
    let secret = w["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"));
    let b = g.user("b@example.com").await;
    g.join(&team, &a, &b, "member").await;
    g.team_key(&team, &a, None).await;
    wait_until("two deliveries", || async { rx.seen().len() >= 2 }).await;
    capture(secret, &rx.seen()[0]);
    for (h, body) in rx.seen() {
        assert!(verify(secret, &h, &body), "signature of {body}");
        assert!(!verify(
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            &h,
            &body
        ));
        assert_eq!(h["content-type"], "application/json");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["data"]["team_id"], team.as_str());
        assert!(chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).is_ok());
        assert!(h["webhook-id"].to_str().unwrap().starts_with("evt_"));
    }
    let joined = rx.of_type("member.joined");
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0].1["data"]["user_id"], b.id.as_str());
    assert_eq!(rx.of_type("key.created").len(), 1);
    // Not subscribed: nothing else came.
    assert_eq!(rx.seen().len(), 2);
    // The delivery log, newest first, and the listing without the secret.
    let id = w["id"].as_str().unwrap();
    let rows = log(&g, &format!("{path}/{id}/deliveries"), &a).await;
    wait_until("both delivered in the log", || async {
        log(&g, &format!("{path}/{id}/deliveries"), &a)
            .await
            .iter()
            .all(|r| r["status"] == "delivered")
    })
    .await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["type"], "key.created");
    let rows = log(&g, &format!("{path}/{id}/deliveries"), &a).await;
    assert_eq!(rows[1]["response_status"], 200);
    assert_eq!(rows[1]["attempt"], 1);
    let list = log(&g, &path, &a).await;
    assert_eq!(list.len(), 1);
    assert!(list[0].get("secret").is_none());
    assert_eq!(list[0]["events"], json!(["member.joined", "key.created"]));
}

#[tokio::test]
async fn a_failed_delivery_is_retried_with_the_same_id_then_given_up() {
    let g = gateway().await;
    let rx = Receiver::start().await;
    rx.answers.lock().unwrap().push_back(500);
    let (a, _) = g.funded("a@example.com", "10").await;
    let team = g.team(&a, "T").await;
    let path = format!("/api/teams/{team}/webhooks");
    let w = hook(&g, &path, &a, &rx.url, &["member.joined"]).await;
    let b = g.user("b@example.com").await;
    g.join(&team, &a, &b, "member").await;
    wait_until("a retry", || async { rx.seen().len() >= 2 }).await;
    let seen = rx.seen();
    assert_eq!(seen[0].0["webhook-id"], seen[1].0["webhook-id"]);
    assert_eq!(seen[0].1, seen[1].1);
    assert!(verify(
        w["secret"].as_str().unwrap(),
        &seen[1].0,
        &seen[1].1
    ));
    let id = w["id"].as_str().unwrap();
    let dpath = format!("{path}/{id}/deliveries");
    wait_until("delivered", || async {
        log(&g, &dpath, &a).await[0]["status"] == "delivered"
    })
    .await;
    let row = &log(&g, &dpath, &a).await[0];
    assert_eq!(row["attempt"], 2);
    assert_eq!(row["attempts"][0]["response_status"], 500);
    assert_eq!(row["response_status"], 200);

    // A receiver that always fails: 1 attempt + 2 retries, then failed.
    rx.answers.lock().unwrap().extend([503, 503, 503, 503]);
    let c = g.user("c@example.com").await;
    g.join(&team, &a, &c, "member").await;
    wait_until("failed", || async {
        log(&g, &dpath, &a).await[0]["status"] == "failed"
    })
    .await;
    let row = &log(&g, &dpath, &a).await[0];
    assert_eq!(row["attempt"], 3);
    assert_eq!(row["next_attempt_at"], Value::Null);
    assert_eq!(rx.seen().len(), 5);
}

#[tokio::test]
async fn the_authorisation_matrix_and_bad_input() {
    let g = gateway().await;
    let (a, _) = g.funded("a@example.com", "10").await;
    let team = g.team(&a, "T").await;
    let admin = g.user("admin@example.com").await;
    let member = g.user("member@example.com").await;
    let stranger = g.user("stranger@example.com").await;
    g.join(&team, &a, &admin, "admin").await;
    g.join(&team, &a, &member, "member").await;
    let path = format!("/api/teams/{team}/webhooks");
    let w = hook(&g, &path, &a, "https://example.com/h", &["balance.low"]).await;
    let id = w["id"].as_str().unwrap();
    let body = json!({"url": "https://example.com/x", "events": ["balance.low"]});
    let alerts = json!({"thresholds": ["5"]});
    for (who, want) in [
        (&admin, StatusCode::FORBIDDEN),
        (&member, StatusCode::FORBIDDEN),
        (&stranger, StatusCode::NOT_FOUND),
    ] {
        let t = Some(who.token.as_str());
        assert_eq!(g.post(&path, t, &body).await.status(), want);
        assert_eq!(g.get(&path, t).await.status(), want);
        assert_eq!(
            g.get(&format!("{path}/{id}/deliveries"), t).await.status(),
            want
        );
        assert_eq!(g.delete(&format!("{path}/{id}"), t).await.status(), want);
        let r = g
            .http
            .put(format!("{}/api/teams/{team}/alerts", g.url))
            .bearer_auth(&who.token)
            .json(&alerts)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want);
    }
    assert_eq!(g.get(&path, None).await.status(), StatusCode::UNAUTHORIZED);
    // Someone else's endpoint is not found through one's own routes.
    assert_eq!(
        g.delete(&format!("/api/me/webhooks/{id}"), Some(&a.token))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    refuses_bad_bodies(&g, &path, &a).await;
    assert_eq!(log(&g, &path, &a).await.len(), 1);
    assert_eq!(
        g.delete(&format!("{path}/{id}"), Some(&a.token))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert!(log(&g, &path, &a).await.is_empty());
}

/// 422 for each malformed endpoint, with its code; nothing created.
async fn refuses_bad_bodies(g: &Gateway, path: &str, a: &User) {
    for (bad, code) in [
        (
            json!({"url": "ftp://example.com/", "events": ["balance.low"]}),
            "invalid_url",
        ),
        (
            json!({"url": "example.com", "events": ["balance.low"]}),
            "invalid_url",
        ),
        (
            json!({"url": "https://example.com/", "events": ["balance.lower"]}),
            "invalid_event",
        ),
        (
            json!({"url": "https://example.com/", "events": []}),
            "invalid_event",
        ),
        (
            json!({"url": "https://example.com/", "events": ["key.created"], "x": 1}),
            "invalid_request",
        ),
    ] {
        let r = g.post(path, Some(&a.token), &bad).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            code,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn private_addresses_are_refused_without_the_flag() {
    let g = spawn_gateway().await;
    let a = g.user("a@example.com").await;
    for url in [
        "http://127.0.0.1:8080/h",
        "http://10.0.0.1/h",
        "http://169.254.169.254/latest",
        "http://[::1]/h",
    ] {
        let r = g
            .post(
                "/api/me/webhooks",
                Some(&a.token),
                &json!({"url": url, "events": ["key.created"]}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{url}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "invalid_url"
        );
    }
    // A name that resolves to loopback is accepted, but never called:
    // the attempt fails at resolution and is logged as such.
    let rx = Receiver::start().await;
    let url = rx.url.replace("127.0.0.1", "localhost");
    let w = hook(&g, "/api/me/webhooks", &a, &url, &["quota.reached"]).await;
    assert!(w["id"].is_string());
}

/// `n` concurrent calls on `key`, each costing $0.0006; all must pass.
async fn spend(g: &Gateway, key: &str, n: usize) {
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1000});
    let knobs = [
        ("x-mock-prompt-tokens", "0"),
        ("x-mock-completion-tokens", "1000"),
    ];
    let calls = (0..n).map(|_| g.chat(key, &body, &knobs));
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.status(), StatusCode::OK);
    }
}

/// The team's event log entries of `kind`.
async fn logged(g: &Gateway, team: &str, owner: &User, kind: &str) -> Vec<Value> {
    let ev: Vec<Value> = g
        .get(&format!("/api/teams/{team}/events"), Some(&owner.token))
        .await
        .json()
        .await
        .unwrap();
    ev.into_iter().filter(|e| e["kind"] == kind).collect()
}

async fn put_alerts(g: &Gateway, path: &str, who: &User, body: &Value) -> reqwest::Response {
    g.http
        .put(format!("{}{path}", g.url))
        .bearer_auth(&who.token)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// 422 for each malformed threshold list.
async fn refuses_bad_thresholds(g: &Gateway, path: &str, a: &User) {
    for bad in [
        json!({"thresholds": ["0"]}),
        json!({"thresholds": ["-1"]}),
        json!({"thresholds": [1]}),
        json!({"thresholds": vec!["1"; 11]}),
        json!({"thresholds": ["0.0000000001"]}),
    ] {
        assert_eq!(
            put_alerts(g, path, a, &bad).await.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn balance_low_fires_once_for_50_concurrent_crossings_and_rearms() {
    let g = gateway().await;
    let rx = Receiver::start().await;
    let (a, _) = g.funded("a@example.com", "1").await;
    let team = g.team(&a, "Ops").await;
    let w = hook(
        &g,
        &format!("/api/teams/{team}/webhooks"),
        &a,
        &rx.url,
        &["balance.low"],
    )
    .await;
    let path = format!("/api/teams/{team}/alerts");
    refuses_bad_thresholds(&g, &path, &a).await;
    // $1.00 now; 50 calls of $0.0006 cross $0.994 on the 11th.
    let r = put_alerts(&g, &path, &a, &json!({"thresholds": ["0.994", "0.5"]})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"thresholds": ["0.50", "0.994"]})
    );
    let (_, key) = g.team_key(&team, &a, None).await;
    spend(&g, &key, 50).await;
    wait_until("all settled", || async {
        g.team_balance(&team, &a).await == "0.97"
    })
    .await;
    wait_until("one delivery", || async {
        !rx.of_type("balance.low").is_empty()
    })
    .await;
    let lows = logged(&g, &team, &a, "balance.low").await;
    assert_eq!(lows.len(), 1, "{lows:?}");
    let (h, v) = &rx.of_type("balance.low")[0];
    let (_, raw) = rx.seen().into_iter().next().unwrap();
    assert!(verify(w["secret"].as_str().unwrap(), h, &raw));
    assert_eq!(v["data"]["threshold"], "0.994");
    assert_eq!(v["data"]["team_id"], team.as_str());
    assert!(nanos(v["data"]["balance"].as_str().unwrap()) < nanos("0.994"));
    // The owner's email, through the outbox.
    wait_until("the email", || async {
        g.store
            .outbox()
            .await
            .unwrap()
            .iter()
            .any(|m| m.to == a.email)
    })
    .await;
    let outbox = g.store.outbox().await.unwrap();
    let mail = outbox.iter().find(|m| m.to == a.email).unwrap();
    assert!(
        mail.body.contains("Ops") && mail.body.contains("0.994"),
        "{}",
        mail.body
    );
    assert!(
        mail.body.contains("https://gw.example.com/"),
        "{}",
        mail.body
    );
    // A top-up back above re-arms it; the next crossing fires again.
    assert_eq!(
        g.team_deposit(&team, "0.03").await.status(),
        StatusCode::CREATED
    );
    spend(&g, &key, 20).await;
    wait_until("re-armed alert", || async {
        rx.of_type("balance.low").len() == 2
    })
    .await;
    wait_until("settled", || async {
        g.team_balance(&team, &a).await == "0.988"
    })
    .await;
    assert_eq!(logged(&g, &team, &a, "balance.low").await.len(), 2);
}

#[tokio::test]
async fn personal_wallets_get_wallet_events_with_the_user_id() {
    let g = gateway().await;
    let rx = Receiver::start().await;
    let (u, key) = g.funded("u@example.com", "0.0506").await;
    let events = ["wallet.suspended", "wallet.resumed", "balance.low"];
    hook(&g, "/api/me/webhooks", &u, &rx.url, &events).await;
    let r = put_alerts(&g, "/api/me/alerts", &u, &json!({"thresholds": ["0.0503"]})).await;
    assert_eq!(r.status(), StatusCode::OK);
    spend(&g, &key, 1).await;
    wait_until("suspended", || async {
        !rx.of_type("wallet.suspended").is_empty()
    })
    .await;
    wait_until("low", || async { !rx.of_type("balance.low").is_empty() }).await;
    let (_, v) = &rx.of_type("wallet.suspended")[0];
    assert_eq!(v["data"]["user_id"], u.id.as_str());
    assert!(v["data"].get("team_id").is_none());
    g.deposit(&u, "1", "stripe").await;
    wait_until("resumed", || async {
        !rx.of_type("wallet.resumed").is_empty()
    })
    .await;
    assert_eq!(rx.of_type("wallet.suspended").len(), 1);
}

#[tokio::test]
async fn a_receiver_down_across_a_gateway_restart_gets_its_delivery_after() {
    let Some(redis) = redis_harness::RedisServer::start("webhooks_restart") else {
        return;
    };
    let mock = spawn_mock().await;
    let delays = vec!["300"; 30].join(",");
    let extra = [
        ("TOLLGATE_WEBHOOK_ALLOW_PRIVATE", "true".to_string()),
        ("TOLLGATE_WEBHOOK_POLL_MS", "20".to_string()),
        ("TOLLGATE_WEBHOOK_RETRY_DELAYS_MS", delays),
    ];
    let mut gw = process::Gw::start_with(&redis.url(), &mock.url, &extra).await;
    // Nothing listens on the receiver's port yet.
    let port = process::free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let (a, _) = gw.api.funded("a@example.com", "10").await;
    let team = gw.api.team(&a, "T").await;
    let path = format!("/api/teams/{team}/webhooks");
    let r = gw
        .api
        .post(
            &path,
            Some(&a.token),
            &json!({"url": url, "events": ["member.joined"]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let w: Value = r.json().await.unwrap();
    let dpath = format!("{path}/{}/deliveries", w["id"].as_str().unwrap());
    let b = gw.api.user("b@example.com").await;
    gw.api.join(&team, &a, &b, "member").await;
    wait_until("a failed attempt", || async {
        let rows = log_of(&gw.api, &dpath, &a).await;
        rows.first()
            .is_some_and(|r| r["attempt"].as_u64() >= Some(1))
    })
    .await;
    gw.term();
    gw.spawn().await;
    let rx = Receiver::start_on(TcpListener::bind(("127.0.0.1", port)).await.unwrap());
    wait_until("delivered after the restart", || async {
        !rx.seen().is_empty()
    })
    .await;
    let (h, body) = rx.seen().remove(0);
    assert!(verify(w["secret"].as_str().unwrap(), &h, &body));
    wait_until("logged as delivered", || async {
        log_of(&gw.api, &dpath, &a).await[0]["status"] == "delivered"
    })
    .await;
    let row = &log_of(&gw.api, &dpath, &a).await[0];
    assert_eq!(
        h["webhook-id"].to_str().unwrap(),
        row["event_id"].as_str().unwrap()
    );
    assert!(row["attempt"].as_u64().unwrap() >= 2, "{row}");
    assert_eq!(rx.seen().len(), 1);
}

async fn log_of(api: &Api, path: &str, who: &User) -> Vec<Value> {
    api.get(path, Some(&who.token)).await.json().await.unwrap()
}

#[tokio::test]
async fn a_team_created_at_zero_is_logged_suspended_and_a_funded_one_is_not() {
    let g = gateway().await;
    let a = g.user("a@example.com").await;
    let broke = g.team(&a, "Broke").await;
    wait_until("team.suspended", || async {
        logged(&g, &broke, &a, "team.suspended").await.len() == 1
    })
    .await;
    let (b, _) = g.funded("b@example.com", "10").await;
    let rich = g.team(&b, "Rich").await;
    // The deposit below is logged after anything the creation logged.
    assert_eq!(
        g.team_deposit(&rich, "1").await.status(),
        StatusCode::CREATED
    );
    let ev: Vec<Value> = g
        .get(&format!("/api/teams/{rich}/events"), Some(&b.token))
        .await
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = ev.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(
        !kinds.contains(&"team.suspended") && !kinds.contains(&"team.resumed"),
        "{kinds:?}"
    );
}
