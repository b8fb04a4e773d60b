//! Issue 13's hard edges on the management API, through real sockets: S3
//! (JSON bodies only, no repeated member names), T2/K1a names, L3 leavers'
//! assigned keys, S1 bounded password checks.

// Tests may panic on unexpected errors: that is how they fail.
#![allow(clippy::unwrap_used)]

#[path = "common/calls.rs"]
mod calls;
mod common;

use reqwest::StatusCode;
use serde_json::{json, Value};

use calls::{chat_status, error_code, post_as, send};
use common::{spawn_gateway, OPERATOR};

/// A raw body POSTed as `bearer` with `content_type`.
async fn post_raw(
    api: &common::Api,
    path: &str,
    bearer: &str,
    content_type: &str,
    body: String,
) -> reqwest::Response {
    send(
        post_as(api, path, bearer)
            .header("content-type", content_type)
            .header("Idempotency-Key", tollgate::ids::new_id("idem"))
            .body(body),
    )
    .await
}

#[tokio::test]
async fn a_deposit_naming_amount_twice_is_refused_and_changes_nothing() {
    let g = spawn_gateway().await;
    let u = g.user("dup@example.com").await;
    let body = format!(
        r#"{{"user_id":"{}","amount":"1.00","kind":"stripe","amount":"900.00"}}"#,
        u.id
    );
    let before = (g.balance(&u).await, g.reconcile().await);
    let r = post_raw(
        &g,
        "/api/admin/deposits",
        OPERATOR,
        "application/json",
        body,
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(r).await, "invalid_json");
    assert_eq!((g.balance(&u).await, g.reconcile().await), before);
}

#[tokio::test]
async fn repeated_names_are_refused_at_any_depth() {
    let g = spawn_gateway().await;
    let u = g.user("nested@example.com").await;
    let bodies = [
        r#"{"name":"a","name":"b"}"#,
        r#"{"name":"a","x":{"y":1,"y":2}}"#,
        r#"{"name":"a","x":[{"y":1},{"z":[{"q":1,"q":1}]}]}"#,
        r#"{"name":"a","\u006eame":"b"}"#,
    ];
    for body in bodies {
        let r = post_raw(&g, "/api/teams", &u.token, "application/json", body.into()).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(error_code(r).await, "invalid_json", "{body}");
    }
    // An unknown member that is not repeated keeps its old answer.
    let r = post_raw(
        &g,
        "/api/teams",
        &u.token,
        "application/json",
        r#"{"name":"a","x":{"y":1}}"#.into(),
    )
    .await;
    assert_eq!(error_code(r).await, "invalid_request");
    // Not JSON at all keeps its old 400.
    let r = post_raw(
        &g,
        "/api/teams",
        &u.token,
        "application/json",
        "{nope".into(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let me: Value = g.me(&u).await;
    assert_eq!(me["teams"], json!([]));
}

#[tokio::test]
async fn only_json_bodies_are_read() {
    let g = spawn_gateway().await;
    let u = g.user("ctype@example.com").await;
    let body = || json!({"name": "Ops"}).to_string();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin1",
        "",
    ] {
        let r = post_raw(&g, "/api/teams", &u.token, ct, body()).await;
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        assert_eq!(error_code(r).await, "unsupported_media_type", "{ct:?}");
    }
    let creds = json!({"email": "ctype2@example.com", "password": "password123"}).to_string();
    let r = send(
        g.http
            .post(format!("{}/api/users", g.url))
            .header("content-type", "text/plain")
            .body(creds.clone()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = send(
        g.http
            .post(format!("{}/api/users", g.url))
            .header("content-type", "Application/JSON; charset=UTF-8")
            .body(creds),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(g.me(&u).await["teams"], json!([]));
}

#[tokio::test]
async fn names_need_a_visible_character_and_no_bidi_controls() {
    let g = spawn_gateway().await;
    let u = g.user("names@example.com").await;
    let refused = [
        "\u{200B}\u{200C}\u{200D}",
        " \u{2060}\u{FEFF} ",
        "Ops\u{202E}gpj.exe",
        "a\u{2066}b",
    ];
    for name in refused {
        for path in ["/api/teams", "/api/keys"] {
            let r = g.post(path, Some(&u.token), &json!({"name": name})).await;
            assert_eq!(
                r.status(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "{path} {name:?}"
            );
            assert_eq!(error_code(r).await, "invalid_name", "{path} {name:?}");
        }
    }
    let r = g
        .post("/api/keys", Some(&u.token), &json!({"name": "laptop 🔑"}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = g
        .post("/api/teams", Some(&u.token), &json!({"name": " Ops 🚀 "}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let team = r.json::<Value>().await.unwrap();
    assert_eq!(team["name"], "Ops 🚀");
    let path = format!("/api/teams/{}/keys", team["id"].as_str().unwrap());
    let r = g
        .post(&path, Some(&u.token), &json!({"name": "\u{200B}"}))
        .await;
    assert_eq!(error_code(r).await, "invalid_name");
}

#[tokio::test]
async fn a_team_key_assigned_to_a_leaver_or_a_removed_member_stops() {
    let g = spawn_gateway().await;
    let (owner, _) = g.funded("owner@example.com", "10").await;
    let team = g.team(&owner, "T").await;
    let stays = g.user("stays@example.com").await;
    g.join(&team, &owner, &stays, "member").await;
    let (_, kept) = g.team_key(&team, &owner, Some(&stays.id)).await;
    for (email, by_self) in [("leaver@example.com", true), ("removed@example.com", false)] {
        let m = g.user(email).await;
        g.join(&team, &owner, &m, "member").await;
        let (_, assigned) = g.team_key(&team, &owner, Some(&m.id)).await;
        assert_eq!(chat_status(&g, &assigned, &[]).await, StatusCode::OK);
        let by = if by_self { &m.token } else { &owner.token };
        let path = format!("/api/teams/{team}/members/{}", m.id);
        assert_eq!(
            g.delete(&path, Some(by)).await.status(),
            StatusCode::NO_CONTENT
        );
        let r = g
            .chat(&assigned, &common::chat_body("gpt-4o-mini"), &[])
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{email}");
        assert_eq!(error_code(r).await, "invalid_api_key", "{email}");
    }
    // A key assigned to someone who stayed is untouched.
    assert_eq!(chat_status(&g, &kept, &[]).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_failed_logins_is_bounded_and_a_right_one_works_after() {
    let g = spawn_gateway().await;
    g.user("victim@example.com").await;
    let mut calls = Vec::new();
    for i in 0..150 {
        let (http, url) = (g.http.clone(), g.url.clone());
        let email = if i % 2 == 0 {
            "victim@example.com".to_string()
        } else {
            format!("nobody{i}@example.com")
        };
        calls.push(tokio::spawn(async move {
            let body = json!({"email": email, "password": "wrong-password"});
            let r = http
                .post(format!("{url}/api/sessions"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, error_code(r).await)
        }));
    }
    let (mut refused, mut overloaded) = (0, 0);
    for c in calls {
        match c.await.unwrap() {
            (StatusCode::UNAUTHORIZED, code) => {
                assert_eq!(code, "invalid_credentials");
                refused += 1;
            }
            (StatusCode::SERVICE_UNAVAILABLE, code) => {
                assert_eq!(code, "overloaded");
                overloaded += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(refused + overloaded, 150);
    eprintln!("{refused} refused as wrong, {overloaded} as overloaded");
    // 150 at once outnumber the cores plus the queue (S1): some are refused
    // unchecked rather than each holding an Argon2 buffer.
    let cores = std::thread::available_parallelism().unwrap().get();
    let capacity = cores + tollgate::accounts::password_pool::MAX_WAITING;
    assert!(overloaded > 0 || capacity >= 150, "capacity {capacity}");
    g.log_in("victim@example.com").await;
}
