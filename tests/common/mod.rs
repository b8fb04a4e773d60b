//! Shared test helpers: a real gateway on port 0 in front of a real mock
//! upstream on port 0, and a client that speaks to both through sockets.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tollgate::clock::ShiftedClock;
use tollgate::config::{Config, Secret};
use tollgate::pricing::Pricing;
use tollgate::store::memory::MemoryStore;
use tollgate::store::Store;
use tollgate::Running;
use tollgate_mock_upstream::MockUpstream;

pub const OPERATOR: &str = "operator-secret-for-tests";
pub const UPSTREAM_KEY: &str = "upstream-secret-key";
pub const PRICING: &str = include_str!("../../config/pricing.toml");

pub struct Mock {
    pub upstream: MockUpstream,
    pub url: String,
}

pub async fn spawn_mock() -> Mock {
    let upstream = MockUpstream::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(upstream.clone().serve(listener, std::future::pending()));
    Mock { upstream, url }
}

/// A config for tests: ephemeral ports, the mock upstream, an operator.
pub fn test_config(upstream_url: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        upstream_url: upstream_url.to_string(),
        upstream_api_key: Some(Secret(UPSTREAM_KEY.into())),
        operator_token: Some(Secret(OPERATOR.into())),
        flush_interval: Duration::from_millis(2),
        ..Config::default()
    }
}

pub struct Gateway {
    pub running: Running,
    /// The gateway's clock; tests move it by hand.
    pub clock: Arc<ShiftedClock>,
    pub mock: Mock,
    pub api: Api,
    pub store: Arc<dyn Store>,
}

/// The HTTP helpers, for a gateway in this process or in another one.
pub struct Api {
    pub http: reqwest::Client,
    pub url: String,
}

impl Api {
    pub fn new(url: &str) -> Api {
        Api {
            http: reqwest::Client::new(),
            url: url.to_string(),
        }
    }
}

impl std::ops::Deref for Gateway {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

pub async fn spawn_gateway() -> Gateway {
    spawn_gateway_with(|_| {}).await
}

pub async fn spawn_gateway_with(tweak: impl FnOnce(&mut Config)) -> Gateway {
    spawn_gateway_priced(PRICING, tweak).await
}

/// `spawn_gateway_with`, with the pricing file's text given; `tweak` sees
/// the config with the mock's URL already in it.
pub async fn spawn_gateway_priced(pricing: &str, tweak: impl FnOnce(&mut Config)) -> Gateway {
    let mock = spawn_mock().await;
    let mut config = test_config(&mock.url);
    tweak(&mut config);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let pricing = Pricing::parse(pricing, "test pricing").unwrap();
    let clock = Arc::new(ShiftedClock::default());
    let running = tollgate::server::start_with_clock(config, store.clone(), pricing, clock.clone())
        .await
        .unwrap();
    let url = running.url();
    Gateway {
        running,
        clock,
        mock,
        api: Api::new(&url),
        store,
    }
}

/// A signed-up, logged-in user.
pub struct User {
    pub id: String,
    pub email: String,
    pub token: String,
}

impl Api {
    pub async fn post(&self, path: &str, bearer: Option<&str>, body: &Value) -> Response {
        let mut r = self.http.post(format!("{}{path}", self.url)).json(body);
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        r.send().await.unwrap()
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Response {
        let mut r = self.http.get(format!("{}{path}", self.url));
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        r.send().await.unwrap()
    }

    pub async fn patch(&self, path: &str, bearer: Option<&str>, body: &Value) -> Response {
        let mut r = self.http.patch(format!("{}{path}", self.url)).json(body);
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        r.send().await.unwrap()
    }

    pub async fn delete(&self, path: &str, bearer: Option<&str>) -> Response {
        let mut r = self.http.delete(format!("{}{path}", self.url));
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        r.send().await.unwrap()
    }

    /// Sign up `email` and log in.
    pub async fn user(&self, email: &str) -> User {
        let r = self
            .post(
                "/api/users",
                None,
                &json!({"email": email, "password": "password123"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        self.log_in(email).await
    }

    /// A fresh session for an existing user.
    pub async fn log_in(&self, email: &str) -> User {
        let r = self
            .post(
                "/api/sessions",
                None,
                &json!({"email": email, "password": "password123"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let token = r.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        let me: Value = self
            .get("/api/me", Some(&token))
            .await
            .json()
            .await
            .unwrap();
        User {
            id: me["id"].as_str().unwrap().to_string(),
            email: email.to_string(),
            token,
        }
    }

    /// An operator deposit; returns the response.
    pub async fn deposit_raw(&self, idem: &str, body: &Value) -> Response {
        self.http
            .post(format!("{}/api/admin/deposits", self.url))
            .bearer_auth(OPERATOR)
            .header("Idempotency-Key", idem)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn deposit(&self, user: &User, amount: &str, kind: &str) -> Value {
        let idem = tollgate::ids::new_id("idem");
        let r = self
            .deposit_raw(
                &idem,
                &json!({"user_id": user.id, "amount": amount, "kind": kind}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        r.json().await.unwrap()
    }

    pub async fn key(&self, user: &User) -> String {
        let r = self
            .post("/api/keys", Some(&user.token), &json!({"name": "k"}))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["key"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A user with `paid` dollars deposited and a personal key.
    pub async fn funded(&self, email: &str, paid: &str) -> (User, String) {
        let u = self.user(email).await;
        if paid != "0" {
            self.deposit(&u, paid, "stripe").await;
        }
        let k = self.key(&u).await;
        (u, k)
    }

    pub async fn me(&self, user: &User) -> Value {
        let r = self.get("/api/me", Some(&user.token)).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    /// (paid, promo) as the API shows them.
    pub async fn balance(&self, user: &User) -> (String, String) {
        let me = self.me(user).await;
        (
            me["balance"]["paid"].as_str().unwrap().to_string(),
            me["balance"]["promo"].as_str().unwrap().to_string(),
        )
    }

    pub async fn reconcile(&self) -> Value {
        let r = self.get("/api/admin/reconcile", Some(OPERATOR)).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    /// A chat completion through the proxy, with mock knobs as headers.
    /// A knob that makes the mock generate more than the body's
    /// `max_tokens` raises `max_tokens` to match: a real upstream never
    /// exceeds it, and the gateway bills no more than it (M3).
    pub async fn chat(&self, key: &str, body: &Value, knobs: &[(&str, &str)]) -> Response {
        let mut body = body.clone();
        let forced = knobs
            .iter()
            .find(|(k, _)| *k == "x-mock-completion-tokens")
            .and_then(|(_, v)| v.parse::<u64>().ok());
        if let (Some(n), Some(max)) = (forced, body["max_tokens"].as_u64()) {
            if n > max {
                body["max_tokens"] = n.into();
            }
        }
        let mut r = self
            .http
            .post(format!("{}/v1/chat/completions", self.url))
            .bearer_auth(key)
            .json(&body);
        for (k, v) in knobs {
            r = r.header(*k, *v);
        }
        r.send().await.unwrap()
    }
}

pub fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 100})
}

/// Nano-dollars as the API prints them.
pub fn usd(nanos: i64) -> String {
    tollgate::money::Nanos(nanos).to_string()
}

/// gpt-4o-mini: 0.15 in, 0.075 cached, 0.60 out per million = nanos/token x1000.
pub fn mini_cost(prompt: i64, cached: i64, output: i64) -> i64 {
    (prompt - cached) * 150 + cached * 75 + output * 600
}

/// Poll `cond` until it holds (bounded: 10 s), instead of sleeping blindly.
pub async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A money string from the API, exactly, in nano-dollars.
pub fn nanos(s: &str) -> i64 {
    tollgate::money::parse_amount(s, tollgate::money::AmountRules::ANY)
        .unwrap()
        .0
}

impl Api {
    /// Create a team owned by `owner`; returns its id.
    pub async fn team(&self, owner: &User, name: &str) -> String {
        let r = self
            .post("/api/teams", Some(&owner.token), &json!({"name": name}))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Invite `email` as `role`; returns the token from the accept link.
    pub async fn invite(&self, team: &str, by: &User, email: &str, role: &str) -> String {
        let r = self
            .post(
                &format!("/api/teams/{team}/invites"),
                Some(&by.token),
                &json!({"email": email, "role": role}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        let v: Value = r.json().await.unwrap();
        v["accept_url"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string()
    }

    pub async fn accept(&self, user: &User, token: &str) -> Response {
        self.post(
            &format!("/api/invites/{token}/accept"),
            Some(&user.token),
            &json!({}),
        )
        .await
    }

    /// Invite and accept: `user` joins `team` as `role`.
    pub async fn join(&self, team: &str, by: &User, user: &User, role: &str) {
        let token = self.invite(team, by, &user.email, role).await;
        let r = self.accept(user, &token).await;
        assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    }

    pub async fn team_key(&self, team: &str, by: &User, member: Option<&str>) -> (String, String) {
        let mut body = json!({"name": "team key"});
        if let Some(m) = member {
            body["member_id"] = json!(m);
        }
        let r = self
            .post(&format!("/api/teams/{team}/keys"), Some(&by.token), &body)
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        let v: Value = r.json().await.unwrap();
        (
            v["id"].as_str().unwrap().to_string(),
            v["key"].as_str().unwrap().to_string(),
        )
    }

    /// The team's balance as its owner sees it.
    pub async fn team_balance(&self, team: &str, owner: &User) -> String {
        let v: Value = self
            .get(&format!("/api/teams/{team}"), Some(&owner.token))
            .await
            .json()
            .await
            .unwrap();
        v["balance"]
            .as_str()
            .unwrap_or_else(|| panic!("no balance in {v}"))
            .to_string()
    }

    pub async fn team_deposit(&self, team: &str, amount: &str) -> Response {
        let idem = tollgate::ids::new_id("idem");
        self.deposit_raw(
            &idem,
            &json!({"team_id": team, "amount": amount, "kind": "stripe"}),
        )
        .await
    }
}
