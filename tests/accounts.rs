//! Users, sessions, operator deposits and personal keys through real
//! sockets (A1-A4, B7, B8, K1, K2, K4, K5).

// Tests may panic on unexpected errors: that is how they fail.
#![allow(clippy::unwrap_used)]

#[path = "common/calls.rs"]
mod calls;
mod common;

use std::sync::Arc;

use calls::*;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn sign_up_log_in_and_me() {
    let g = spawn_gateway().await;
    let r = g
        .post(
            "/api/users",
            None,
            &json!({"email": "Ann@Example.com", "password": "password123"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    assert!(v["id"].is_string());
    assert_eq!(v["email"], "Ann@Example.com");
    assert!(v.get("password").is_none() && v.get("password_hash").is_none());
    // Emails are unique case-insensitively (A1).
    let r = g
        .post(
            "/api/users",
            None,
            &json!({"email": "ann@example.COM", "password": "password123"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "email_taken"
    );
    // Log in with either case.
    let r = g
        .post(
            "/api/sessions",
            None,
            &json!({"email": "ann@example.com", "password": "password123"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let s: Value = r.json().await.unwrap();
    let token = s["token"].as_str().unwrap();
    assert!(s["expires_at"].is_string());
    let me = get_json(&g, "/api/me", token).await;
    assert_eq!(me["email"], "Ann@Example.com");
    assert_eq!(me["balance"], json!({"paid": "0.00", "promo": "0.00"}));
    assert_eq!(me["owned_team_id"], Value::Null);
    assert_eq!(me["teams"], json!([]));
    // The password is stored only as an Argon2id hash (A1); the session only
    // as a hash.
    let user = g
        .store
        .user_by_email("ann@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(user.password_hash.starts_with("$argon2id$"));
    assert!(!user.password_hash.contains("password123"));
    assert!(g.store.session(token).await.unwrap().is_none());
    assert!(g
        .store
        .session(&tollgate::ids::sha256_hex(token.as_bytes()))
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn bad_sign_ups_and_logins_are_refused_alike() {
    let g = spawn_gateway().await;
    g.user("bob@example.com").await;
    let cases = [
        (
            json!({"email": "not-an-email", "password": "password123"}),
            422,
            "invalid_email",
        ),
        (
            json!({"email": "x@example.com", "password": "short"}),
            422,
            "weak_password",
        ),
        (json!({"email": "x@example.com"}), 422, "invalid_request"),
        (
            json!({"email": "x@example.com", "password": "password123", "id": "usr_mine"}),
            422,
            "invalid_request",
        ),
        (json!(["x"]), 422, "invalid_request"),
    ];
    for (body, status, code) in cases {
        let r = g.post("/api/users", None, &body).await;
        assert_eq!(r.status().as_u16(), status, "{body}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            code,
            "{body}"
        );
    }
    let r = g
        .http
        .post(format!("{}/api/users", g.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let big = json!({"email": "y@example.com", "password": "p".repeat(100_000)});
    assert_eq!(
        g.post("/api/users", None, &big).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // Wrong password and unknown email: the same 401 (no enumeration).
    let wrong = g
        .post(
            "/api/sessions",
            None,
            &json!({"email": "bob@example.com", "password": "nope-nope"}),
        )
        .await;
    let unknown = g
        .post(
            "/api/sessions",
            None,
            &json!({"email": "who@example.com", "password": "nope-nope"}),
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.text().await.unwrap(), unknown.text().await.unwrap());
}

#[tokio::test]
async fn unknown_and_expired_sessions_get_401() {
    let g = spawn_gateway().await;
    let u = g.user("a@example.com").await;
    for bad in [None, Some("tgs_nope"), Some("")] {
        assert_eq!(
            get_status(&g, "/api/me", bad).await,
            StatusCode::UNAUTHORIZED
        );
    }
    // An API key is not a session.
    let key = g.key(&u).await;
    assert_eq!(
        get_status(&g, "/api/me", Some(&key)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_status(&g, "/api/me", Some(&u.token)).await,
        StatusCode::OK
    );
    g.clock
        .advance(chrono::Duration::hours(168) + chrono::Duration::seconds(1));
    assert_eq!(
        get_status(&g, "/api/me", Some(&u.token)).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn deposits_are_idempotent_and_exact() {
    let g = spawn_gateway().await;
    let u = g.user("a@example.com").await;
    let body =
        json!({"user_id": u.id, "amount": "12.345678901", "kind": "stripe", "reference": "pi_1"});
    let first = g.deposit_raw("dep-1", &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["amount"], "12.345678901");
    assert_eq!(first["balance_after"], "12.345678901");
    assert_eq!(first["wallet"], format!("user:{}", u.id));
    // The same key and body: the first answer, nothing changes.
    let again = g.deposit_raw("dep-1", &body).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(g.balance(&u).await.0, "12.345678901");
    // The same key with another body: 409, nothing changes.
    let other = json!({"user_id": u.id, "amount": "1", "kind": "stripe"});
    let r = g.deposit_raw("dep-1", &other).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "idempotency_conflict"
    );
    // Promo goes to promo.
    g.deposit_raw(
        "dep-2",
        &json!({"user_id": u.id, "amount": "0.5", "kind": "promo"}),
    )
    .await;
    assert_eq!(
        g.balance(&u).await,
        ("12.345678901".to_string(), "0.50".to_string())
    );
    let rec = g.reconcile().await;
    assert_eq!(rec["deposits_total"], "12.845678901");
    assert_eq!(rec["ok"], true);
}

#[tokio::test]
async fn bad_deposits_change_nothing() {
    let g = spawn_gateway().await;
    let u = g.user("a@example.com").await;
    let stripe = |amount: Value| json!({"user_id": u.id, "amount": amount, "kind": "stripe"});
    let cases = [
        (stripe(json!(5)), 422),
        (stripe(json!(5.5)), 422),
        (stripe(json!("0")), 422),
        (stripe(json!("-1")), 422),
        (stripe(json!("0.0000000001")), 422),
        (stripe(json!("1000000000.01")), 422),
        (stripe(json!("1e3")), 422),
        (
            json!({"user_id": u.id, "amount": "1", "kind": "paypal"}),
            422,
        ),
        (
            json!({"user_id": u.id, "team_id": "team_x", "amount": "1", "kind": "stripe"}),
            422,
        ),
        (json!({"amount": "1", "kind": "stripe"}), 422),
        (
            json!({"user_id": u.id, "amount": "1", "kind": "stripe", "balance": "9"}),
            422,
        ),
        (
            json!({"user_id": "usr_nobody", "amount": "1", "kind": "stripe"}),
            404,
        ),
        (
            json!({"team_id": "team_nobody", "amount": "1", "kind": "stripe"}),
            404,
        ),
    ];
    for (i, (body, status)) in cases.iter().enumerate() {
        let r = g.deposit_raw(&format!("bad-{i}"), body).await;
        assert_eq!(r.status().as_u16(), *status, "{body}");
    }
    // The largest allowed deposit is exact.
    let r = g
        .deposit_raw(
            "max",
            &json!({"user_id": u.id, "amount": "1000000000", "kind": "crypto"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(g.balance(&u).await.0, "1000000000.00");
    // Without an Idempotency-Key, or without the operator: refused.
    let body = json!({"user_id": u.id, "amount": "1", "kind": "stripe"});
    let r = g
        .http
        .post(format!("{}/api/admin/deposits", g.url))
        .bearer_auth(OPERATOR)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = g
        .http
        .post(format!("{}/api/admin/deposits", g.url))
        .bearer_auth(&u.token)
        .header("Idempotency-Key", "x")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        get_status(&g, "/api/admin/reconcile", Some("wrong-token")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(g.balance(&u).await.0, "1000000000.00");
    assert_eq!(g.reconcile().await["deposits_total"], "1000000000.00");
}

#[tokio::test]
async fn concurrent_identical_deposits_credit_once() {
    let g = Arc::new(spawn_gateway().await);
    let u = g.user("a@example.com").await;
    let body = json!({"user_id": u.id, "amount": "3.25", "kind": "stripe"});
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (g, body) = (g.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            g.deposit_raw("same", &body).await.status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::CREATED);
    }
    assert_eq!(g.balance(&u).await.0, "3.25");
    assert_eq!(g.reconcile().await["deposits_total"], "3.25");
}

#[tokio::test]
async fn operator_is_refused_when_no_token_is_configured() {
    let g = spawn_gateway_with(|c| c.operator_token = None).await;
    let u = g.user("a@example.com").await;
    let r = stripe_deposit(&g, "x", &u, "1").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        get_status(&g, "/api/admin/reconcile", Some("")).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn personal_keys_are_shown_once_and_stored_as_hashes() {
    let g = spawn_gateway().await;
    let u = g.user("a@example.com").await;
    let r = g
        .post("/api/keys", Some(&u.token), &json!({"name": "laptop"}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    let key = v["key"].as_str().unwrap();
    assert!(
        key.starts_with("tgk_") && key.len() >= 4 + 32,
        "at least 128 random bits"
    );
    assert_eq!(v["scope"], "personal");
    assert_eq!(v["status"], "active");
    assert!(key.starts_with(v["prefix"].as_str().unwrap()));
    let list = get_json(&g, "/api/keys", &u.token).await;
    let text = list.to_string();
    assert!(!text.contains(key), "listings never show the key");
    assert_eq!(list[0]["name"], "laptop");
    assert_eq!(list[0]["created_by"], u.id.as_str());
    let stored = g.store.keys_of_user(&u.id).await.unwrap().remove(0);
    assert_eq!(stored.hash, tollgate::ids::sha256_hex(key.as_bytes()));
    // Names are checked; another user's key is not found (404, not 403).
    for bad in [
        json!({"name": ""}),
        json!({"name": "x".repeat(65)}),
        json!({"name": "a\nb"}),
    ] {
        assert_eq!(
            g.post("/api/keys", Some(&u.token), &bad).await.status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
    let other = g.user("b@example.com").await;
    let id = v["id"].as_str().unwrap();
    assert_eq!(
        delete_status(&g, &format!("/api/keys/{id}"), Some(&other.token)).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        delete_status(&g, &format!("/api/keys/{id}"), None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        delete_status(&g, &format!("/api/keys/{id}"), Some(&u.token)).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        delete_status(&g, &format!("/api/keys/{id}"), Some(&u.token)).await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_key_refused_as_unknown_works_once_it_exists() {
    // The negative cache must not outlive the creation of the key it hides.
    let g =
        spawn_gateway_with(|c| c.negative_cache_ttl = std::time::Duration::from_secs(3600)).await;
    let (u, _) = g.funded("a@example.com", "1").await;
    let minted = tollgate::auth::mint_key();
    let r = g.chat(&minted.secret, &chat_body("gpt-4o-mini"), &[]).await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "unknown: now negatively cached"
    );
    let record = tollgate::store::KeyRecord {
        id: "key_late".into(),
        hash: minted.hash_hex.clone(),
        prefix: minted.prefix.clone(),
        name: "late".into(),
        scope: tollgate::store::KeyScope::Personal,
        created_by: u.id.clone(),
        team_id: None,
        member_id: u.id.clone(),
        wallet_id: format!("user:{}", u.id),
        status: tollgate::store::KeyStatus::Active,
        created_at: chrono::Utc::now(),
        last_used_at: None,
    };
    g.store.put_key(&record).await.unwrap();
    g.running.app.keys.changed(&*g.store, &record.hash).await;
    let r = g.chat(&minted.secret, &chat_body("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn health_and_readiness() {
    let g = spawn_gateway().await;
    assert_eq!(get_status(&g, "/healthz", None).await, StatusCode::OK);
    assert_eq!(get_status(&g, "/readyz", None).await, StatusCode::OK);
}

#[tokio::test]
async fn the_demo_seeds_a_working_key() {
    let config = test_config("http://127.0.0.1:1");
    let (running, seeded) = tollgate::demo::launch(config).await.unwrap();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/chat/completions", running.url()))
        .bearer_auth(&seeded.api_key)
        .json(&chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http
        .get(format!("{}/api/admin/reconcile", running.url()))
        .bearer_auth(&seeded.operator_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["deposits_total"], "11.00");
    running.stop().await.unwrap();
}
