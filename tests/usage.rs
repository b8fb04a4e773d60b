//! Usage reports through real sockets (U1-U4): stats equal the requests
//! made, to the token and the nano-dollar; buckets roll at UTC midnight;
//! visibility follows the role table.

// Tests may panic on unexpected errors: that is how they fail.
#![allow(clippy::unwrap_used)]

#[path = "common/calls.rs"]
mod calls;
mod common;

use calls::*;
use common::*;
use proptest::prelude::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn usage(g: &Gateway, path: &str, token: &str) -> Value {
    let r = g.get(path, Some(token)).await;
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.json().await.unwrap()
}

/// The row of the array `rows` whose `field` is `id`.
fn row(rows: &Value, field: &str, id: &str) -> Value {
    let found = rows.as_array().unwrap().iter().find(|r| r[field] == id);
    found.cloned().unwrap()
}

#[tokio::test]
async fn stats_equal_the_requests_made_json_and_streamed() {
    let g = spawn_gateway().await;
    let (u, key) = g.funded("a@example.com", "10").await;
    let t = [
        ("x-mock-prompt-tokens", "100"),
        ("x-mock-cached-tokens", "40"),
        ("x-mock-completion-tokens", "7"),
    ];
    assert_eq!(chat_status(&g, &key, &t).await, StatusCode::OK);
    let stream = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let t2 = [
        ("x-mock-prompt-tokens", "20"),
        ("x-mock-completion-tokens", "5"),
    ];
    let text = g.chat(&key, &stream, &t2).await.text().await.unwrap();
    assert!(text.ends_with("[DONE]\n\n"));
    // A failed upstream call is not counted.
    assert_eq!(
        chat_status(&g, &key, &[("x-mock-status", "503")]).await,
        StatusCode::BAD_GATEWAY
    );

    let keys = || get_json(&g, "/api/keys", &u.token);
    // `last_used_at` is written with the settlement, at the wallet's next
    // flush (every 2 ms here).
    wait_until("last_used_at after a flush", || async {
        keys().await[0]["last_used_at"].is_string()
    })
    .await;
    let keys = keys().await;
    let key_id = keys[0]["id"].as_str().unwrap();
    let s = usage(&g, &format!("/api/keys/{key_id}/usage"), &u.token).await;
    assert_eq!(s["calls"], 2);
    assert_eq!(s["input_tokens"], 120);
    assert_eq!(s["cached_tokens"], 40);
    assert_eq!(s["output_tokens"], 12);
    assert_eq!(s["total_tokens"], 132);
    let spend = mini_cost(100, 40, 7) + mini_cost(20, 0, 5);
    assert_eq!(s["spend"], usd(spend));
    assert_eq!(s["days"].as_array().unwrap().len(), 30);
    assert_eq!(s["days"][29]["calls"], 2);
    // Usage spend = the ledger's settlements = what the balance lost.
    assert_eq!(g.balance(&u).await.0, usd(10_000_000_000 - spend));
    let me = usage(&g, "/api/me/usage", &u.token).await;
    assert_eq!(me["spend"], usd(spend));
    assert_eq!(me["teams"], json!([]));
}

#[tokio::test]
async fn days_and_format_are_checked_and_csv_is_served() {
    let g = spawn_gateway().await;
    let (u, key) = g.funded("a@example.com", "10").await;
    g.chat(&key, &chat_body("gpt-4o-mini"), &[]).await;
    for bad in ["0", "91", "abc", "-1", "1.5"] {
        let r = g
            .get(&format!("/api/me/usage?days={bad}"), Some(&u.token))
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "days={bad}");
    }
    assert_eq!(
        get_status(&g, "/api/me/usage?format=xml", Some(&u.token)).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let s = usage(&g, "/api/me/usage?days=90", &u.token).await;
    assert_eq!(s["days"].as_array().unwrap().len(), 90);
    let r = g
        .get("/api/me/usage?format=csv&days=1", Some(&u.token))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(content_type(&r).starts_with("text/csv"));
    let text = r.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with("date,wallet_id,key_id,member_id,calls"));
    assert!(lines[1].contains(&u.id));
}

#[tokio::test]
async fn day_buckets_roll_at_utc_midnight() {
    let g = spawn_gateway().await;
    let (u, key) = g.funded("a@example.com", "10").await;
    let before_midnight: chrono::DateTime<chrono::Utc> =
        "2026-03-01T23:59:59.500Z".parse().unwrap();
    g.clock.set(before_midnight);
    g.chat(&key, &chat_body("gpt-4o-mini"), &[]).await;
    g.clock.set("2026-03-02T00:00:01Z".parse().unwrap());
    g.chat(&key, &chat_body("gpt-4o-mini"), &[]).await;
    g.chat(&key, &chat_body("gpt-4o-mini"), &[]).await;
    let s = usage(&g, "/api/me/usage?days=2", &u.token).await;
    assert_eq!(s["days"][0]["date"], "2026-03-01");
    assert_eq!(s["days"][0]["calls"], 1);
    assert_eq!(s["days"][1]["date"], "2026-03-02");
    assert_eq!(s["days"][1]["calls"], 2);
    let s = usage(&g, "/api/me/usage?days=1", &u.token).await;
    assert_eq!(s["calls"], 2);
    // 31 days on, the window has moved past both.
    g.clock.advance(chrono::Duration::days(31));
    assert_eq!(usage(&g, "/api/me/usage", &u.token).await["calls"], 0);
}

#[tokio::test]
async fn team_usage_by_member_and_key_keeps_leavers_and_deleted_keys() {
    let g = spawn_gateway().await;
    let (a, _) = g.funded("a@example.com", "10").await;
    let team = g.team(&a, "T").await;
    let b = g.user("b@example.com").await;
    g.join(&team, &a, &b, "admin").await;
    let (ka_id, ka) = g.team_key(&team, &a, None).await;
    let (kb_id, kb) = g.team_key(&team, &b, None).await;
    let one = [
        ("x-mock-prompt-tokens", "10"),
        ("x-mock-completion-tokens", "10"),
    ];
    g.chat(&ka, &chat_body("gpt-4o-mini"), &one).await;
    g.chat(&kb, &chat_body("gpt-4o-mini"), &one).await;
    g.chat(&kb, &chat_body("gpt-4o-mini"), &one).await;
    let per = mini_cost(10, 0, 10);

    let mine = usage(&g, &format!("/api/teams/{team}/usage/me"), &b.token).await;
    assert_eq!(
        (mine["calls"].as_u64(), mine["spend"].as_str()),
        (Some(2), Some(usd(2 * per).as_str()))
    );
    let me = usage(&g, "/api/me/usage", &b.token).await;
    assert_eq!(me["teams"][0]["team_id"], team.as_str());
    assert_eq!(me["teams"][0]["calls"], 2);

    // B leaves: B's key is deleted, B's usage stays in the team's totals.
    g.delete(
        &format!("/api/teams/{team}/members/{}", b.id),
        Some(&b.token),
    )
    .await;
    let t = usage(&g, &format!("/api/teams/{team}/usage"), &a.token).await;
    assert_eq!(t["total"]["calls"], 3);
    assert_eq!(t["total"]["spend"], usd(3 * per));
    let member = |id: &str| row(&t["by_member"], "user_id", id);
    assert_eq!(member(&b.id)["calls"], 2);
    assert_eq!(member(&b.id)["left"], true);
    assert_eq!(member(&a.id)["left"], false);
    let key = |id: &str| row(&t["by_key"], "key_id", id);
    assert_eq!(key(&kb_id)["status"], "deleted");
    assert_eq!(key(&kb_id)["spend"], usd(2 * per));
    assert_eq!(key(&ka_id)["calls"], 1);
    // Team usage spend = the team ledger's settlements.
    let ledger = get_json(&g, &format!("/api/teams/{team}/ledger"), &a.token).await;
    let settled: i64 = ledger
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "settlement")
        .map(|e| -nanos(e["amount"].as_str().unwrap()))
        .sum();
    assert_eq!(usd(settled), t["total"]["spend"].as_str().unwrap());
}

/// Every visibility rule (U3): who sees which usage endpoint.
#[tokio::test]
async fn usage_visibility_follows_the_role_table() {
    let g = spawn_gateway().await;
    let owner = g.user("owner@example.com").await;
    let team = g.team(&owner, "T").await;
    let admin = g.user("admin@example.com").await;
    let member = g.user("member@example.com").await;
    let outsider = g.user("outsider@example.com").await;
    g.join(&team, &owner, &admin, "admin").await;
    g.join(&team, &owner, &member, "member").await;
    let (for_member, _) = g.team_key(&team, &owner, Some(&member.id)).await;
    let (for_admin, _) = g.team_key(&team, &owner, Some(&admin.id)).await;
    let (_, personal) = g.funded("p@example.com", "1").await;
    let p_user_keys = g
        .store
        .keys_of_user(
            &g.store
                .user_by_email("p@example.com")
                .await
                .unwrap()
                .unwrap()
                .id,
        )
        .await
        .unwrap();
    let personal_id = p_user_keys[0].id.clone();
    let _ = personal;

    let who = [&owner, &admin, &member, &outsider];
    let rows: Vec<(String, [u16; 5])> = vec![
        (
            format!("/api/teams/{team}/usage"),
            [200, 200, 403, 404, 401],
        ),
        (
            format!("/api/teams/{team}/usage/me"),
            [200, 200, 200, 404, 401],
        ),
        (
            format!("/api/keys/{for_member}/usage"),
            [200, 200, 200, 404, 401],
        ),
        (
            format!("/api/keys/{for_admin}/usage"),
            [200, 200, 404, 404, 401],
        ),
        (
            format!("/api/keys/{personal_id}/usage"),
            [404, 404, 404, 404, 401],
        ),
        ("/api/me/usage".to_string(), [200, 200, 200, 200, 401]),
    ];
    for (path, want) in rows {
        for (i, u) in who.iter().enumerate() {
            let r = g.get(&path, Some(&u.token)).await;
            assert_eq!(r.status().as_u16(), want[i], "{path} as {}", u.email);
        }
        assert_eq!(
            get_status(&g, &path, None).await.as_u16(),
            want[4],
            "{path} anonymous"
        );
    }
}

#[derive(Clone, Debug)]
enum Call {
    Json {
        prompt: u16,
        cached: u16,
        output: u16,
    },
    Stream {
        prompt: u16,
        output: u16,
    },
    Fail,
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        (0u16..5000, 0u16..5000, 0u16..3000).prop_map(|(p, c, o)| Call::Json {
            prompt: p,
            cached: c.min(p),
            output: o
        }),
        (1u16..3000, 1u16..200).prop_map(|(p, o)| Call::Stream {
            prompt: p,
            output: o
        }),
        Just(Call::Fail),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// For any mix of requests, usage spend over all of a wallet's keys
    /// equals the ledger's settled debits, and both equal what was spent.
    #[test]
    fn usage_spend_equals_ledger_settlements(calls in prop::collection::vec((call(), 0usize..3), 1..12)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let g = spawn_gateway().await;
            let (a, _) = g.funded("a@example.com", "100").await;
            let team = g.team(&a, "T").await;
            let mut keys = Vec::new();
            for _ in 0..3 {
                keys.push(g.team_key(&team, &a, None).await.1);
            }
            let mut expected = 0i64;
            for (c, k) in &calls {
                let key = &keys[*k];
                match c {
                    Call::Json { prompt, cached, output } => {
                        let (p, cc, o) = (prompt.to_string(), cached.to_string(), output.to_string());
                        let t = [("x-mock-prompt-tokens", p.as_str()), ("x-mock-cached-tokens", cc.as_str()), ("x-mock-completion-tokens", o.as_str())];
                        assert_eq!(chat_status(&g, key, &t).await, StatusCode::OK);
                        expected += mini_cost(*prompt as i64, *cached as i64, *output as i64);
                    }
                    Call::Stream { prompt, output } => {
                        let (p, o) = (prompt.to_string(), output.to_string());
                        let t = [("x-mock-prompt-tokens", p.as_str()), ("x-mock-completion-tokens", o.as_str())];
                        let body = json!({"model": "gpt-4o-mini", "stream": true, "max_tokens": 200, "messages": [{"role": "user", "content": "x"}]});
                        g.chat(key, &body, &t).await.text().await.unwrap();
                        expected += mini_cost(*prompt as i64, 0, *output as i64);
                    }
                    Call::Fail => {
                        assert_eq!(chat_status(&g, key, &[("x-mock-status", "500")]).await, StatusCode::BAD_GATEWAY);
                    }
                }
            }
            let t = usage(&g, &format!("/api/teams/{team}/usage"), &a.token).await;
            let by_key: i64 = t["by_key"].as_array().unwrap().iter().map(|k| nanos(k["spend"].as_str().unwrap())).sum();
            let ledger = get_json(&g, &format!("/api/teams/{team}/ledger"), &a.token).await;
            let settled: i64 = ledger.as_array().unwrap().iter().filter(|e| e["kind"] == "settlement")
                .map(|e| -nanos(e["amount"].as_str().unwrap())).sum();
            assert_eq!(by_key, settled);
            assert_eq!(settled, expected);
            assert_eq!(nanos(t["total"]["spend"].as_str().unwrap()), expected);
            assert_eq!(nanos(&g.team_balance(&team, &a).await), 100_000_000_000 - expected);
        });
    }
}
