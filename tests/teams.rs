//! Team accounts through real sockets: the documented lifecycle, the exact
//! amounts of every transfer, the role table, and deletion racing
//! in-flight requests (T1-T4, I1-I5, L1-L3, B2-B4, B7-B9, K2-K5, D1).

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
async fn create_moves_paid_keeps_promo_and_archives_personal_keys() {
    let g = spawn_gateway().await;
    let (a, key) = g.funded("a@example.com", "10").await;
    g.deposit(&a, "1", "promo").await;
    let r = g
        .post(
            "/api/teams",
            Some(&a.token),
            &json!({"name": "  Research  "}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["name"], "Research");
    assert_eq!(t["owner_id"], a.id.as_str());
    assert_eq!(t["balance"], "10.00");
    let team = t["id"].as_str().unwrap();
    assert_eq!(
        g.balance(&a).await,
        ("0.00".to_string(), "1.00".to_string())
    );
    // Personal keys are archived, not deleted (K4).
    let r = g.chat(&key, &chat_body("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "key_archived"
    );
    let keys: Value = g
        .get("/api/keys", Some(&a.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(keys[0]["status"], "archived");
    // K2: no personal keys while in a team.
    let r = g
        .post("/api/keys", Some(&a.token), &json!({"name": "x"}))
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "personal_keys_archived"
    );
    let me = g.me(&a).await;
    assert_eq!(me["owned_team_id"], team);
    assert_eq!(me["teams"][0]["role"], "owner");
    let rec = g.reconcile().await;
    assert_eq!(rec["ok"], true);
}

#[tokio::test]
async fn one_team_per_owner_and_names_are_checked() {
    let g = spawn_gateway().await;
    let a = g.user("a@example.com").await;
    let team = g.team(&a, "One").await;
    let r = g
        .post("/api/teams", Some(&a.token), &json!({"name": "Two"}))
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "team_limit"
    );
    // After deleting their team a user may create a new one (T1).
    assert_eq!(
        g.delete(&format!("/api/teams/{team}"), Some(&a.token))
            .await
            .status(),
        StatusCode::OK
    );
    g.team(&a, "Two").await;

    let b = g.user("b@example.com").await;
    for bad in [
        json!({"name": ""}),
        json!({"name": "   "}),
        json!({"name": "x".repeat(49)}),
        json!({"name": "bell\u{7}"}),
        json!({"name": 5}),
    ] {
        let r = g.post("/api/teams", Some(&b.token), &bad).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    // 48 characters of two bytes each is fine (T2 counts characters).
    g.team(&b, &"é".repeat(48)).await;
    // A4: no mass assignment.
    let c = g.user("c@example.com").await;
    let r = g
        .post(
            "/api/teams",
            Some(&c.token),
            &json!({"name": "x", "balance": "100"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn join_moves_paid_leave_keeps_it_and_restores_personal_keys() {
    let g = spawn_gateway().await;
    let (a, _) = g.funded("a@example.com", "10").await;
    let team = g.team(&a, "T").await;
    let (b, b_key) = g.funded("b@example.com", "5.5").await;
    g.deposit(&b, "2", "promo").await;
    g.join(&team, &a, &b, "member").await;
    assert_eq!(g.team_balance(&team, &a).await, "15.50");
    assert_eq!(
        g.balance(&b).await,
        ("0.00".to_string(), "2.00".to_string())
    );
    assert_eq!(chat_status(&g, &b_key, &[]).await, StatusCode::UNAUTHORIZED);

    // B uses a team key: billed to the team (B1).
    let (_, tk) = g.team_key(&team, &a, Some(&b.id)).await;
    let t = [
        ("x-mock-prompt-tokens", "0"),
        ("x-mock-completion-tokens", "1000"),
    ];
    assert_eq!(chat_status(&g, &tk, &t).await, StatusCode::OK);
    assert_eq!(
        g.team_balance(&team, &a).await,
        usd(15_500_000_000 - 600_000)
    );

    // B leaves: the money stays (L3), personal keys come back.
    let r = g
        .delete(
            &format!("/api/teams/{team}/members/{}", b.id),
            Some(&b.token),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        g.team_balance(&team, &a).await,
        usd(15_500_000_000 - 600_000)
    );
    assert_eq!(
        g.balance(&b).await,
        ("0.00".to_string(), "2.00".to_string())
    );
    g.deposit(&b, "1", "stripe").await;
    assert_eq!(chat_status(&g, &b_key, &[]).await, StatusCode::OK);
    // Assigned to B by A: deleted with B's leaving (L3 as amended).
    assert_eq!(chat_status(&g, &tk, &[]).await, StatusCode::UNAUTHORIZED);
    // The team is gone for B (404, not 403).
    assert_eq!(
        g.get(&format!("/api/teams/{team}"), Some(&b.token))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(g.reconcile().await["ok"], true);
}

#[tokio::test]
async fn team_keys_a_leaver_created_or_was_assigned_stop_on_the_next_request() {
    let g = spawn_gateway().await;
    let (a, _) = g.funded("a@example.com", "10").await;
    let team = g.team(&a, "T").await;
    let b = g.user("b@example.com").await;
    g.join(&team, &a, &b, "admin").await;
    let (_, made_by_b) = g.team_key(&team, &b, None).await;
    let (_, made_by_a_for_b) = g.team_key(&team, &a, Some(&b.id)).await;
    for k in [&made_by_b, &made_by_a_for_b] {
        assert_eq!(chat_status(&g, k, &[]).await, StatusCode::OK);
    }
    let r = g
        .delete(
            &format!("/api/teams/{team}/members/{}", b.id),
            Some(&a.token),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // L3 as amended: the key the Owner assigned to B goes too, not only
    // the one B created.
    for k in [&made_by_b, &made_by_a_for_b] {
        let r = g.chat(k, &chat_body("gpt-4o-mini"), &[]).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn deletion_pays_the_remaining_balance_to_the_owner() {
    let g = spawn_gateway().await;
    let (a, a_key) = g.funded("a@example.com", "10").await;
    let team = g.team(&a, "T").await;
    let (b, b_key) = g.funded("b@example.com", "4").await;
    g.join(&team, &a, &b, "member").await;
    let (_, tk) = g.team_key(&team, &a, None).await;
    let t = [
        ("x-mock-prompt-tokens", "0"),
        ("x-mock-completion-tokens", "1000"),
    ];
    assert_eq!(chat_status(&g, &tk, &t).await, StatusCode::OK);
    let c = g.user("c@example.com").await;
    let pending = g.invite(&team, &a, &c.email, "member").await;

    // Only the owner deletes.
    assert_eq!(
        g.delete(&format!("/api/teams/{team}"), Some(&b.token))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    let r = g
        .delete(&format!("/api/teams/{team}"), Some(&a.token))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let expected = 14_000_000_000 - 600_000;
    assert_eq!(r.json::<Value>().await.unwrap()["refunded"], usd(expected));
    assert_eq!(g.balance(&a).await.0, usd(expected));
    assert_eq!(g.balance(&b).await.0, "0.00");
    // Keys: the team's stop, everyone's personal keys come back.
    assert_eq!(chat_status(&g, &tk, &[]).await, StatusCode::UNAUTHORIZED);
    assert_eq!(chat_status(&g, &a_key, &[]).await, StatusCode::OK);
    g.deposit(&b, "1", "stripe").await;
    assert_eq!(chat_status(&g, &b_key, &[]).await, StatusCode::OK);
    // The team is gone; its pending invite is dead.
    assert_eq!(
        g.get(&format!("/api/teams/{team}"), Some(&a.token))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(g.accept(&c, &pending).await.status(), StatusCode::GONE);
    assert!(g.me(&b).await["teams"].as_array().unwrap().is_empty());
    assert_eq!(g.reconcile().await["ok"], true);
}

#[tokio::test]
async fn deletion_racing_32_in_flight_requests_bills_or_refuses_each() {
    let g = Arc::new(spawn_gateway().await);
    let (a, _) = g.funded("a@example.com", "10").await;
    let team = g.team(&a, "T").await;
    let (_, tk) = g.team_key(&team, &a, None).await;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (g, tk) = (g.clone(), tk.clone());
        tasks.push(tokio::spawn(async move {
            let delay = (i % 8 * 25).to_string();
            let knobs = [
                ("x-mock-delay-ms", delay.as_str()),
                ("x-mock-prompt-tokens", "0"),
                ("x-mock-completion-tokens", "1000"),
            ];
            chat_status(&g, &tk, &knobs).await
        }));
    }
    // Delete while requests are in flight at the upstream.
    wait_until("requests in flight", || async {
        g.mock.upstream.request_count() >= 4
    })
    .await;
    let r = g
        .delete(&format!("/api/teams/{team}"), Some(&a.token))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let refunded = nanos(
        r.json::<Value>().await.unwrap()["refunded"]
            .as_str()
            .unwrap(),
    );
    let mut billed = 0i64;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => billed += 1,
            StatusCode::UNAUTHORIZED | StatusCode::PAYMENT_REQUIRED => {}
            s => panic!("unexpected {s}"),
        }
    }
    assert!(
        billed >= 4,
        "requests admitted before the delete must be served and billed"
    );
    // Each served request was billed to the team before the payout.
    assert_eq!(refunded, 10_000_000_000 - billed * 600_000);
    assert_eq!(g.balance(&a).await.0, usd(refunded));
    let rec = g.reconcile().await;
    assert_eq!(rec["ok"], true);
    assert_eq!(rec["usage_total"], usd(billed * 600_000));
    assert_eq!(rec["balances_total"], usd(refunded));
}

#[tokio::test]
async fn invites_are_single_use_replaced_revocable_and_expire() {
    let g = spawn_gateway().await;
    let a = g.user("a@example.com").await;
    let team = g.team(&a, "T").await;
    let b = g.user("B@Example.com").await;
    // Replaced: the old token stops working.
    let old = g.invite(&team, &a, "b@example.com", "member").await;
    let new = g.invite(&team, &a, "b@example.com", "admin").await;
    assert_ne!(old, new);
    assert_eq!(g.accept(&b, &old).await.status(), StatusCode::GONE);
    // Only the invited email may accept (case-insensitively).
    let c = g.user("c@example.com").await;
    assert_eq!(g.accept(&c, &new).await.status(), StatusCode::FORBIDDEN);
    let r = g.accept(&b, &new).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["role"], "admin");
    assert_eq!(g.accept(&b, &new).await.status(), StatusCode::GONE);
    // Inviting a member gets 409.
    let r = g
        .post(
            &format!("/api/teams/{team}/invites"),
            Some(&a.token),
            &json!({"email": "b@example.com", "role": "member"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    // Revoked.
    let tok = g.invite(&team, &a, "c@example.com", "member").await;
    let list: Value = g
        .get(&format!("/api/teams/{team}/invites"), Some(&b.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let id = list[0]["id"].as_str().unwrap();
    assert_eq!(
        g.delete(&format!("/api/teams/{team}/invites/{id}"), Some(&b.token))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(g.accept(&c, &tok).await.status(), StatusCode::GONE);
    // Expired after 7 days (the clock moves; nothing sleeps).
    let tok = g.invite(&team, &a, "c@example.com", "member").await;
    g.clock
        .advance(chrono::Duration::days(7) + chrono::Duration::seconds(1));
    // (Sessions last 7 days too: sign in again.)
    let c = g.log_in(&c.email).await;
    assert_eq!(g.accept(&c, &tok).await.status(), StatusCode::GONE);
    // Unknown tokens: 404.
    assert_eq!(
        g.accept(&c, "tgi_nope").await.status(),
        StatusCode::NOT_FOUND
    );
    // The outbox holds every email, with the link.
    let outbox: Value = g
        .get("/api/admin/outbox", Some(OPERATOR))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(outbox.as_array().unwrap().len(), 4);
    assert!(outbox[1]["link"].as_str().unwrap().ends_with(&new));
    assert_eq!(
        g.get("/api/admin/outbox", Some(&a.token)).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn several_teams_at_once_and_keys_return_only_when_in_none() {
    let g = spawn_gateway().await;
    let a = g.user("a@example.com").await;
    let ta = g.team(&a, "A").await;
    let b = g.user("b@example.com").await;
    let tb = g.team(&b, "B").await;
    let (c, c_key) = g.funded("c@example.com", "3").await;
    g.join(&ta, &a, &c, "member").await;
    g.deposit(&c, "2", "crypto").await;
    g.join(&tb, &b, &c, "admin").await;
    assert_eq!(g.team_balance(&ta, &a).await, "3.00");
    assert_eq!(g.team_balance(&tb, &b).await, "2.00");
    let me = g.me(&c).await;
    assert_eq!(me["teams"].as_array().unwrap().len(), 2);
    g.delete(&format!("/api/teams/{ta}/members/{}", c.id), Some(&c.token))
        .await;
    assert_eq!(chat_status(&g, &c_key, &[]).await, StatusCode::UNAUTHORIZED);
    g.delete(&format!("/api/teams/{tb}/members/{}", c.id), Some(&c.token))
        .await;
    g.deposit(&c, "1", "stripe").await;
    assert_eq!(chat_status(&g, &c_key, &[]).await, StatusCode::OK);
}

#[tokio::test]
async fn suspension_warning_events_and_top_up() {
    let g = spawn_gateway().await;
    let (a, _) = g.funded("a@example.com", "0.0506").await;
    let team = g.team(&a, "T").await;
    let b = g.user("b@example.com").await;
    g.join(&team, &a, &b, "admin").await;
    let (_, tk) = g.team_key(&team, &a, None).await;
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1000});
    let t = [
        ("x-mock-prompt-tokens", "0"),
        ("x-mock-completion-tokens", "1000"),
    ];
    assert_eq!(g.chat(&tk, &body, &t).await.status(), StatusCode::OK);
    let r = g.chat(&tk, &body, &t).await;
    assert_eq!(r.status(), StatusCode::PAYMENT_REQUIRED);
    let v: Value = g
        .get(&format!("/api/teams/{team}"), Some(&a.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["suspended"], true);
    assert_eq!(v["balance"], "0.05");
    assert!(v["warning"].as_str().unwrap().contains("suspended"));
    // The admin sees the suspension, not the billing.
    let v: Value = g
        .get(&format!("/api/teams/{team}"), Some(&b.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["suspended"], true);
    assert!(v.get("balance").is_none() && v.get("warning").is_none());
    // The owner's top-up lifts it at once.
    assert_eq!(
        g.team_deposit(&team, "1").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(g.chat(&tk, &body, &t).await.status(), StatusCode::OK);
    wait_until("team events", || async {
        let ev: Value = g
            .get(&format!("/api/teams/{team}/events"), Some(&a.token))
            .await
            .json()
            .await
            .unwrap();
        let kinds: Vec<String> = ev
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect();
        kinds.contains(&"team.suspended".to_string()) && kinds.contains(&"team.resumed".to_string())
    })
    .await;
    // Promo never goes to a team.
    let r = g
        .deposit_raw(
            "promo-team",
            &json!({"team_id": team, "amount": "1", "kind": "promo"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn the_owner_ledger_has_every_movement_with_unique_ids() {
    let g = spawn_gateway().await;
    let (a, _) = g.funded("a@example.com", "10").await;
    let team = g.team(&a, "T").await;
    let (b, _) = g.funded("b@example.com", "2").await;
    g.join(&team, &a, &b, "admin").await;
    g.team_deposit(&team, "3").await;
    let (_, tk) = g.team_key(&team, &a, None).await;
    g.chat(&tk, &chat_body("gpt-4o-mini"), &[]).await;
    assert_eq!(
        g.get(&format!("/api/teams/{team}/ledger"), Some(&b.token))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    let l: Value = g
        .get(&format!("/api/teams/{team}/ledger"), Some(&a.token))
        .await
        .json()
        .await
        .unwrap();
    let entries = l.as_array().unwrap();
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["transfer_in", "transfer_in", "deposit", "settlement"]
    );
    let mut ids: Vec<&str> = entries.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4);
    let sum: i64 = entries
        .iter()
        .map(|e| nanos(e["amount"].as_str().unwrap()))
        .sum();
    assert_eq!(usd(sum), g.team_balance(&team, &a).await);
}

#[tokio::test]
async fn roles_change_and_removal_follow_the_table() {
    let g = spawn_gateway().await;
    let a = g.user("a@example.com").await;
    let team = g.team(&a, "T").await;
    let b = g.user("b@example.com").await;
    let c = g.user("c@example.com").await;
    let d = g.user("d@example.com").await;
    g.join(&team, &a, &b, "member").await;
    g.join(&team, &a, &c, "member").await;
    g.join(&team, &a, &d, "admin").await;
    let path = |u: &User| format!("/api/teams/{team}/members/{}", u.id);
    // Only the owner changes roles; never to owner.
    assert_eq!(
        g.patch(&path(&b), Some(&d.token), &json!({"role": "admin"}))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        g.patch(&path(&b), Some(&a.token), &json!({"role": "owner"}))
            .await
            .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        g.patch(&path(&a), Some(&a.token), &json!({"role": "member"}))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    let r = g
        .patch(&path(&b), Some(&a.token), &json!({"role": "admin"}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    // An admin invites members only.
    let r = g
        .post(
            &format!("/api/teams/{team}/invites"),
            Some(&b.token),
            &json!({"email": "x@example.com", "role": "admin"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    g.invite(&team, &b, "x@example.com", "member").await;
    // Admin removes a member, not an admin; the owner cannot leave.
    assert_eq!(
        g.delete(&path(&d), Some(&b.token)).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        g.delete(&path(&c), Some(&b.token)).await.status(),
        StatusCode::NO_CONTENT
    );
    let r = g.delete(&path(&a), Some(&a.token)).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "owner_cannot_leave"
    );
    assert_eq!(
        g.delete(&path(&d), Some(&a.token)).await.status(),
        StatusCode::NO_CONTENT
    );
    let members: Value = g
        .get(&format!("/api/teams/{team}/members"), Some(&b.token))
        .await
        .json()
        .await
        .unwrap();
    let mut ids: Vec<&str> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = vec![a.id.as_str(), b.id.as_str()];
    want.sort();
    assert_eq!(ids, want);
}

/// The authorisation matrix: every team, invite, key and usage endpoint x
/// {owner, admin, member, non-member, anonymous} -> the expected status.
#[allow(clippy::too_many_lines)] // test code: one case, one story
#[tokio::test]
async fn authorisation_matrix() {
    let g = spawn_gateway().await;
    let owner = g.user("owner@example.com").await;
    let team = g.team(&owner, "T").await;
    let admin = g.user("admin@example.com").await;
    let member = g.user("member@example.com").await;
    let outsider = g.user("outsider@example.com").await;
    g.join(&team, &owner, &admin, "admin").await;
    g.join(&team, &owner, &member, "member").await;
    g.team_deposit(&team, "5").await;

    #[derive(Clone, Copy, Debug)]
    enum Who {
        Owner,
        Admin,
        Member,
        Outsider,
        Anonymous,
    }
    use Who::*;
    let token = |w: Who| -> Option<String> {
        match w {
            Owner => Some(owner.token.clone()),
            Admin => Some(admin.token.clone()),
            Member => Some(member.token.clone()),
            Outsider => Some(outsider.token.clone()),
            Anonymous => None,
        }
    };
    // (method, path, body, [owner, admin, member, outsider, anonymous]); state
    // is made fresh per row where a call would change it.
    let t = &team;
    #[rustfmt::skip]
    let rows: Vec<(&str, String, Value, [u16; 5])> = vec![
        ("GET", format!("/api/teams/{t}"), json!(null), [200, 200, 200, 404, 401]),
        ("GET", format!("/api/teams/{t}/members"), json!(null), [200, 200, 200, 404, 401]),
        ("GET", format!("/api/teams/{t}/invites"), json!(null), [200, 200, 403, 404, 401]),
        ("POST", format!("/api/teams/{t}/invites"), json!({"email": "new@example.com", "role": "member"}), [201, 201, 403, 404, 401]),
        ("POST", format!("/api/teams/{t}/invites"), json!({"email": "new2@example.com", "role": "admin"}), [201, 403, 403, 404, 401]),
        ("GET", format!("/api/teams/{t}/keys"), json!(null), [200, 200, 200, 404, 401]),
        ("POST", format!("/api/teams/{t}/keys"), json!({"name": "k"}), [201, 201, 403, 404, 401]),
        ("GET", format!("/api/teams/{t}/ledger"), json!(null), [200, 403, 403, 404, 401]),
        ("GET", format!("/api/teams/{t}/events"), json!(null), [200, 403, 403, 404, 401]),
        ("PATCH", format!("/api/teams/{t}/members/{}", member.id), json!({"role": "member"}), [200, 403, 403, 404, 401]),
        ("DELETE", format!("/api/teams/{t}/keys/key_missing"), json!(null), [404, 404, 404, 404, 401]),
        ("DELETE", format!("/api/teams/{t}/invites/inv_missing"), json!(null), [404, 404, 403, 404, 401]),
        ("DELETE", format!("/api/teams/{t}/members/{}", owner.id), json!(null), [409, 403, 403, 404, 401]),
        ("GET", "/api/teams/team_missing".to_string(), json!(null), [404, 404, 404, 404, 401]),
    ];
    for (method, path, body, want) in rows {
        for (i, who) in [Owner, Admin, Member, Outsider, Anonymous]
            .into_iter()
            .enumerate()
        {
            let tok = token(who);
            let r = match method {
                "GET" => g.get(&path, tok.as_deref()).await,
                "POST" => g.post(&path, tok.as_deref(), &body).await,
                "PATCH" => g.patch(&path, tok.as_deref(), &body).await,
                "DELETE" => g.delete(&path, tok.as_deref()).await,
                _ => unreachable!(),
            };
            assert_eq!(r.status().as_u16(), want[i], "{method} {path} as {who:?}");
        }
    }
    // Team key deletion: only owner/admin. A member gets 403 on a key
    // assigned to them (they can see it), 404 on one they cannot see.
    for (who, assigned, want) in [
        (Member, Some(member.id.as_str()), 403),
        (Member, None, 404),
        (Outsider, None, 404),
        (Admin, None, 204),
    ] {
        let (id, _) = g.team_key(&team, &owner, assigned).await;
        let r = g
            .delete(
                &format!("/api/teams/{team}/keys/{id}"),
                token(who).as_deref(),
            )
            .await;
        assert_eq!(r.status().as_u16(), want, "delete key as {who:?}");
    }
    // Deletion of the team: only the owner.
    for (who, want) in [
        (Admin, 403),
        (Member, 403),
        (Outsider, 404),
        (Anonymous, 401),
        (Owner, 200),
    ] {
        let r = g
            .delete(&format!("/api/teams/{team}"), token(who).as_deref())
            .await;
        assert_eq!(r.status().as_u16(), want, "delete team as {who:?}");
    }
}

#[tokio::test]
async fn an_invite_accepted_while_the_team_is_being_deleted_is_gone() {
    let g = Arc::new(spawn_gateway().await);
    let (a, _) = g.funded("a@example.com", "10").await;
    let team = g.team(&a, "T").await;
    let (j, _) = g.funded("j@example.com", "5").await;
    let token = g.invite(&team, &a, &j.email, "member").await;
    let (_, tk) = g.team_key(&team, &a, None).await;
    // A slow request keeps the deletion waiting for its settlement.
    let slow = {
        let (g, tk) = (g.clone(), tk.clone());
        tokio::spawn(async move {
            let knobs = [
                ("x-mock-delay-ms", "800"),
                ("x-mock-prompt-tokens", "0"),
                ("x-mock-completion-tokens", "1000"),
            ];
            chat_status(&g, &tk, &knobs).await
        })
    };
    wait_until("request in flight", || async {
        g.mock.upstream.request_count() >= 1
    })
    .await;
    let del = {
        let (g, team, token) = (g.clone(), team.clone(), a.token.clone());
        tokio::spawn(async move { g.delete(&format!("/api/teams/{team}"), Some(&token)).await })
    };
    wait_until("team marked deleted", || async {
        g.get(&format!("/api/teams/{team}"), Some(&a.token))
            .await
            .status()
            == StatusCode::NOT_FOUND
    })
    .await;
    assert_eq!(g.accept(&j, &token).await.status(), StatusCode::GONE);
    assert_eq!(
        g.team_deposit(&team, "1").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    let r = del.await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap()["refunded"],
        usd(10_000_000_000 - 600_000)
    );
    assert_eq!(
        g.balance(&j).await.0,
        "5.00",
        "the joiner's money never moved"
    );
    assert_eq!(g.reconcile().await["ok"], true);
}

#[tokio::test]
async fn a_request_outlasting_the_close_wait_settles_against_its_reserve() {
    let g = Arc::new(
        spawn_gateway_with(|c| c.team_close_wait = std::time::Duration::from_millis(100)).await,
    );
    let (a, _) = g.funded("a@example.com", "10").await;
    let team = g.team(&a, "T").await;
    let (_, tk) = g.team_key(&team, &a, None).await;
    let slow = {
        let (g, tk) = (g.clone(), tk.clone());
        tokio::spawn(async move {
            let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1000});
            let knobs = [
                ("x-mock-delay-ms", "1000"),
                ("x-mock-prompt-tokens", "0"),
                ("x-mock-completion-tokens", "1000"),
            ];
            g.chat(&tk, &body, &knobs).await.status()
        })
    };
    wait_until("request in flight", || async {
        g.mock.upstream.request_count() >= 1
    })
    .await;
    let r = g
        .delete(&format!("/api/teams/{team}"), Some(&a.token))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let refunded = nanos(
        r.json::<Value>().await.unwrap()["refunded"]
            .as_str()
            .unwrap(),
    );
    // The open hold's reserve stayed behind.
    assert!(
        refunded < 10_000_000_000 && refunded > 9_000_000_000,
        "{refunded}"
    );
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    wait_until("settled", || async {
        g.reconcile().await["holds_total"] == "0.00"
    })
    .await;
    let rec = g.reconcile().await;
    assert_eq!(rec["ok"], true);
    // Nothing went negative: owner + what remains of the reserve = 10 - cost.
    let left = nanos(rec["balances_total"].as_str().unwrap()) - refunded;
    assert!(
        left >= 0,
        "the deleted team's wallet is not in debt: {left}"
    );
    assert_eq!(
        nanos(rec["balances_total"].as_str().unwrap()),
        10_000_000_000 - 600_000
    );
}
