//! Spend and rate limits through real sockets (Q1-Q3): a key limit is
//! never passed under concurrency; periods roll over at midnight UTC and
//! on Mondays on the gateway's injected clock; `total` never resets;
//! clearing re-admits at once; who may set what; bad input changes
//! nothing; rpm and tpm answer 429 with OpenAI's headers.

#![allow(
    clippy::unwrap_used,
    reason = "a test's unwrap is its failure report (clippy.toml allows it in #[test] fns only)"
)]

#[path = "common/calls.rs"]
mod calls;
mod common;

use calls::*;
use chrono::{TimeZone, Utc};
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A chat body of a fixed size, and the knobs that make the mock bill
/// exactly the hold: prompt tokens = the body's bytes (the hold's input
/// bound), completion tokens = `max_tokens`. So each call costs `cost()`.
fn exact_body() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10})
}

fn exact_knobs() -> Vec<(&'static str, String)> {
    let bytes = serde_json::to_vec(&exact_body()).unwrap().len();
    vec![
        ("x-mock-prompt-tokens", bytes.to_string()),
        ("x-mock-completion-tokens", "10".to_string()),
    ]
}

/// What one exact call costs, in nano-dollars.
fn cost() -> i64 {
    let bytes = serde_json::to_vec(&exact_body()).unwrap().len() as i64;
    mini_cost(bytes, 0, 10)
}

async fn call(g: &Api, key: &str) -> reqwest::Response {
    let knobs = exact_knobs();
    let knobs: Vec<(&str, &str)> = knobs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    g.chat(key, &exact_body(), &knobs).await
}

async fn put(g: &Api, path: &str, user: &User, body: &Value) -> reqwest::Response {
    g.http
        .put(format!("{}{path}", g.url))
        .bearer_auth(&user.token)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// A new personal key of `user`: (id, secret).
async fn personal_key(g: &Api, user: &User) -> (String, String) {
    let r = g
        .post("/api/keys", Some(&user.token), &json!({"name": "k"}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    (
        v["id"].as_str().unwrap().to_string(),
        v["key"].as_str().unwrap().to_string(),
    )
}

async fn key_limits(g: &Api, user: &User, key_id: &str) -> Value {
    let keys = get_json(g, "/api/keys", &user.token).await;
    keys.as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key_id)
        .unwrap()["limits"]
        .clone()
}

async fn code_of(r: reqwest::Response) -> String {
    let v: Value = r.json().await.unwrap();
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_limit_admits_at_most_its_calls_under_concurrency() {
    const N: i64 = 5;
    const CONCURRENT: usize = 100;
    const TRIALS: usize = 100;
    let g = spawn_gateway().await;
    let (user, _) = g.funded("many@example.com", "1000").await;
    for trial in 0..TRIALS {
        let (key_id, key) = personal_key(&g, &user).await;
        let limit = usd(N * cost());
        let r = put(
            &g,
            &format!("/api/keys/{key_id}/limits"),
            &user,
            &json!({"spend_limit": limit, "period": "day"}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
        let calls = (0..CONCURRENT).map(|_| {
            let (api, key) = (&g.api, key.clone());
            async move { call(api, &key).await.status() }
        });
        let statuses = futures_util::future::join_all(calls).await;
        let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count() as i64;
        let refused = statuses
            .iter()
            .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
            .count() as i64;
        assert_eq!(
            ok + refused,
            CONCURRENT as i64,
            "trial {trial}: {statuses:?}"
        );
        assert!(
            ok <= N,
            "trial {trial}: {ok} admitted past a limit of {N} calls"
        );
        let limits = key_limits(&g, &user, &key_id).await;
        let spent = nanos(limits["spent_in_period"].as_str().unwrap());
        assert!(
            spent <= N * cost(),
            "trial {trial}: billed {spent} past the limit {}",
            N * cost()
        );
        assert_eq!(
            spent,
            ok * cost(),
            "trial {trial}: every admitted call billed"
        );
        // Nothing refused for lack of money: the limit alone stopped them,
        // and exactly at N (each call costs exactly its hold).
        assert_eq!(ok, N, "trial {trial}");
    }
}

#[tokio::test]
async fn periods_roll_over_at_utc_midnight_and_mondays_and_total_never() {
    let g = spawn_gateway().await;
    // Sunday 2026-12-06, one minute before midnight UTC.
    g.clock
        .set(Utc.with_ymd_and_hms(2026, 12, 6, 23, 59, 0).unwrap());
    let (user, _) = g.funded("periods@example.com", "100").await;
    let (key_id, key) = personal_key(&g, &user).await;
    let path = format!("/api/keys/{key_id}/limits");
    let one_call = usd(cost());

    // A week: Monday to Sunday.
    let r = put(
        &g,
        &path,
        &user,
        &json!({"spend_limit": one_call, "period": "week"}),
    )
    .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["resets_at"], "2026-12-07T00:00:00Z");
    assert_eq!(call(&g, &key).await.status(), StatusCode::OK);
    let r = call(&g, &key).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    assert!(
        r.headers().get("x-should-retry").is_none(),
        "a minute: worth a retry"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2026-12-07T00:00:00Z"),
        "{body}"
    );
    // Monday: a new week.
    g.clock
        .set(Utc.with_ymd_and_hms(2026, 12, 7, 0, 0, 1).unwrap());
    assert_eq!(call(&g, &key).await.status(), StatusCode::OK);
    assert_eq!(call(&g, &key).await.status(), StatusCode::TOO_MANY_REQUESTS);

    // A day, set after today's call: the spend before it counts.
    let r = put(&g, &path, &user, &json!({"period": "day"})).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["spent_in_period"], one_call);
    assert_eq!(v["resets_at"], "2026-12-08T00:00:00Z");
    assert_eq!(call(&g, &key).await.status(), StatusCode::TOO_MANY_REQUESTS);
    // Midnight UTC: a new day.
    g.clock
        .set(Utc.with_ymd_and_hms(2026, 12, 8, 0, 0, 1).unwrap());
    assert_eq!(call(&g, &key).await.status(), StatusCode::OK);
    assert_eq!(call(&g, &key).await.status(), StatusCode::TOO_MANY_REQUESTS);

    // Total: three calls so far, a limit of three: refused, for good.
    let three = usd(3 * cost());
    let r = put(
        &g,
        &path,
        &user,
        &json!({"spend_limit": three, "period": "total"}),
    )
    .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["resets_at"], Value::Null);
    assert_eq!(v["spent_in_period"], three);
    let r = call(&g, &key).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        r.headers().get("retry-after").is_none(),
        "total never resets"
    );
    assert_eq!(r.headers()["x-should-retry"], "false", "SDKs stop retrying");
    g.clock
        .set(Utc.with_ymd_and_hms(2027, 1, 20, 12, 0, 0).unwrap());
    assert_eq!(call(&g, &key).await.status(), StatusCode::TOO_MANY_REQUESTS);

    // Cleared: admitted on the very next request (a new session: the
    // first expired over those weeks).
    let user = g.log_in(&user.email).await;
    let r = put(&g, &path, &user, &json!({"spend_limit": null})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(call(&g, &key).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn period_spend_survives_a_restart() {
    let g = spawn_gateway().await;
    let (user, _) = g.funded("restart@example.com", "100").await;
    let (key_id, key) = personal_key(&g, &user).await;
    // Spent before any limit was set.
    assert_eq!(call(&g, &key).await.status(), StatusCode::OK);
    assert_eq!(call(&g, &key).await.status(), StatusCode::OK);
    let r = put(
        &g,
        &format!("/api/keys/{key_id}/limits"),
        &user,
        &json!({"spend_limit": usd(3 * cost())}),
    )
    .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["period"], "month", "a first spend limit is monthly");
    assert_eq!(v["spent_in_period"], usd(2 * cost()));
    g.running.stop().await.unwrap();

    // A new process on the same store: the wallet's book is rebuilt from
    // the day buckets, so one call is left, not three.
    let pricing = tollgate::pricing::Pricing::parse(PRICING, "config/pricing.toml").unwrap();
    let again = tollgate::server::start_with_clock(
        test_config(&g.mock.url),
        g.store.clone(),
        pricing,
        g.clock.clone(),
    )
    .await
    .unwrap();
    let api = Api::new(&again.url());
    assert_eq!(call(&api, &key).await.status(), StatusCode::OK);
    let r = call(&api, &key).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(code_of(r).await, "quota_exceeded");
}

#[tokio::test]
async fn a_member_limit_covers_every_key_assigned_to_them_and_is_reported_once() {
    let g = spawn_gateway().await;
    let (owner, _) = g.funded("owner@example.com", "100").await;
    let team = g.team(&owner, "Limits").await;
    let member = g.user("member@example.com").await;
    g.join(&team, &owner, &member, "member").await;
    let (_, k1) = g.team_key(&team, &owner, Some(&member.id)).await;
    let (_, k2) = g.team_key(&team, &owner, Some(&member.id)).await;
    let (_, owners) = g.team_key(&team, &owner, None).await;
    let r = put(
        &g,
        &format!("/api/teams/{team}/members/{}/limits", member.id),
        &owner,
        &json!({"spend_limit": usd(cost()), "period": "day"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    assert_eq!(call(&g, &k1).await.status(), StatusCode::OK);
    assert_eq!(call(&g, &k2).await.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(call(&g, &k1).await.status(), StatusCode::TOO_MANY_REQUESTS);
    // The owner's own key is not the member's.
    assert_eq!(call(&g, &owners).await.status(), StatusCode::OK);

    // N3: `quota.reached`, once for the period however often refused.
    let reached = || async {
        let events = get_json(&g, &format!("/api/teams/{team}/events"), &owner.token).await;
        events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "quota.reached" || e["type"] == "quota.reached")
            .cloned()
            .collect::<Vec<Value>>()
    };
    wait_until("quota.reached recorded", || async {
        !reached().await.is_empty()
    })
    .await;
    let events = reached().await;
    assert_eq!(events.len(), 1, "{events:?}");

    // The member sees their own limits; the owner sees everyone's.
    let seen = get_json(&g, &format!("/api/teams/{team}/members"), &member.token).await;
    for m in seen.as_array().unwrap() {
        assert_eq!(
            m.get("limits").is_some(),
            m["user_id"] == member.id.as_str(),
            "{m}"
        );
    }
    let seen = get_json(&g, &format!("/api/teams/{team}/members"), &owner.token).await;
    let mine = seen
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == member.id.as_str())
        .unwrap();
    assert_eq!(mine["limits"]["spent_in_period"], usd(cost()));
    let me = g.me(&member).await;
    assert_eq!(me["teams"][0]["limits"]["spend_limit"], usd(cost()));
}

#[tokio::test]
async fn who_may_set_which_limit() {
    let g = spawn_gateway().await;
    let (owner, _) = g.funded("o@example.com", "10").await;
    let team = g.team(&owner, "Matrix").await;
    let (admin, admin2, member) = (
        g.user("a@example.com").await,
        g.user("a2@example.com").await,
        g.user("m@example.com").await,
    );
    g.join(&team, &owner, &admin, "admin").await;
    g.join(&team, &owner, &admin2, "admin").await;
    g.join(&team, &owner, &member, "member").await;
    let (outsider, _) = g.funded("x@example.com", "0").await;
    let (members_key, _) = g.team_key(&team, &owner, Some(&member.id)).await;
    let (admins_key, _) = g.team_key(&team, &owner, Some(&admin.id)).await;
    let body = json!({"spend_limit": "1", "rpm": 5});
    let key_path = |k: &str| format!("/api/teams/{team}/keys/{k}/limits");
    for (who, key, want) in [
        (&owner, &members_key, StatusCode::OK),
        (&admin, &members_key, StatusCode::OK),
        (&member, &members_key, StatusCode::FORBIDDEN),
        (&member, &admins_key, StatusCode::NOT_FOUND),
        (&outsider, &members_key, StatusCode::NOT_FOUND),
    ] {
        let r = put(&g, &key_path(key), who, &body).await;
        assert_eq!(r.status(), want, "{} on a team key", who.email);
    }
    let member_body = json!({"spend_limit": "2", "period": "week"});
    let member_path = |u: &str| format!("/api/teams/{team}/members/{u}/limits");
    for (who, target, want) in [
        (&owner, &owner, StatusCode::OK),
        (&owner, &admin, StatusCode::OK),
        (&owner, &member, StatusCode::OK),
        (&admin, &member, StatusCode::OK),
        (&admin, &admin2, StatusCode::FORBIDDEN),
        (&admin, &admin, StatusCode::FORBIDDEN),
        (&admin, &owner, StatusCode::FORBIDDEN),
        (&member, &member, StatusCode::FORBIDDEN),
        (&outsider, &member, StatusCode::NOT_FOUND),
        (&owner, &outsider, StatusCode::NOT_FOUND),
    ] {
        let r = put(&g, &member_path(&target.id), who, &member_body).await;
        assert_eq!(r.status(), want, "{} on {}", who.email, target.email);
    }
    // rpm is a key's limit, not a member's.
    let r = put(&g, &member_path(&member.id), &owner, &json!({"rpm": 5})).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Personal keys: their own user only.
    let (own_key, _) = personal_key(&g, &outsider).await;
    let path = format!("/api/keys/{own_key}/limits");
    assert_eq!(
        put(&g, &path, &outsider, &body).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        put(&g, &path, &owner, &body).await.status(),
        StatusCode::NOT_FOUND
    );
    // A team key is not a personal key.
    let path = format!("/api/keys/{members_key}/limits");
    assert_eq!(
        put(&g, &path, &member, &body).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bad_limits_are_refused_and_change_nothing() {
    let g = spawn_gateway().await;
    let (user, _) = g.funded("bad@example.com", "10").await;
    let (key_id, _) = personal_key(&g, &user).await;
    let path = format!("/api/keys/{key_id}/limits");
    let good = json!({"spend_limit": "1.5", "period": "week", "rpm": 10, "tpm": 1000});
    assert_eq!(put(&g, &path, &user, &good).await.status(), StatusCode::OK);
    let before = key_limits(&g, &user, &key_id).await;
    for bad in [
        json!({"spend_limit": "0"}),
        json!({"spend_limit": "-1"}),
        json!({"spend_limit": 1.5}),
        json!({"spend_limit": "1.5e0"}),
        json!({"spend_limit": "0.0000000001"}),
        json!({"spend_limit": "1000000000.000000001"}),
        json!({"spend_limit": "2", "period": "year"}),
        json!({"period": 7}),
        json!({"rpm": 0}),
        json!({"rpm": -1}),
        json!({"rpm": 2.5}),
        json!({"tpm": 1_000_000_001u64}),
        json!({"rpm": "10"}),
        json!({"spend_limit": "2", "burst": 1}),
    ] {
        let r = put(&g, &path, &user, &bad).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(
            key_limits(&g, &user, &key_id).await,
            before,
            "{bad} changed something"
        );
    }
    assert_eq!(before["spend_limit"], "1.50");
    assert_eq!(before["rpm"], 10);
}

#[tokio::test]
async fn rpm_and_tpm_answer_429_with_openai_headers() {
    let g = spawn_gateway().await;
    // Ten seconds into a clock minute: the test ends within this minute.
    g.clock
        .set(Utc.with_ymd_and_hms(2026, 12, 1, 9, 30, 10).unwrap());
    let (user, _) = g.funded("rate@example.com", "10").await;
    let (key_id, key) = personal_key(&g, &user).await;
    let path = format!("/api/keys/{key_id}/limits");
    let r = put(&g, &path, &user, &json!({"rpm": 2})).await;
    assert_eq!(r.status(), StatusCode::OK);
    for remaining in ["1", "0"] {
        let r = call(&g, &key).await;
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers();
        assert_eq!(h["x-ratelimit-limit-requests"], "2");
        assert_eq!(h["x-ratelimit-remaining-requests"], remaining);
        let reset = h["x-ratelimit-reset-requests"].to_str().unwrap();
        assert!(reset.ends_with('s'), "{reset}");
        assert!(h.get("x-ratelimit-limit-tokens").is_none(), "no tpm set");
    }
    let r = call(&g, &key).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "0");
    assert_eq!(code_of(r).await, "rate_limited");
    // The next clock minute admits again.
    g.clock
        .set(Utc.with_ymd_and_hms(2026, 12, 1, 9, 31, 1).unwrap());
    let r = call(&g, &key).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{:?} {:?}",
        r.headers().clone(),
        r.text().await
    );

    // tpm: input + output as settled.
    let r = put(&g, &path, &user, &json!({"rpm": null, "tpm": 100})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = exact_body();
    let big = [
        ("x-mock-prompt-tokens", "60"),
        ("x-mock-completion-tokens", "10"),
    ];
    let r = g.chat(&key, &body, &big).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-ratelimit-limit-tokens"], "100");
    assert_eq!(r.headers()["x-ratelimit-remaining-tokens"], "100");
    assert!(r.headers().get("x-ratelimit-limit-requests").is_none());
    let r = g.chat(&key, &body, &big).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-ratelimit-remaining-tokens"], "30");
    let r = g.chat(&key, &body, &big).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["x-ratelimit-remaining-tokens"], "0");
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(code_of(r).await, "rate_limited");

    // Cleared: admitted at once, and no rate headers any more.
    let r = put(&g, &path, &user, &json!({"tpm": null})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = g.chat(&key, &body, &big).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("x-ratelimit-limit-tokens").is_none());
}
