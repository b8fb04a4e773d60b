//! B10 through real sockets: a deposit, a join or a deletion payout that
//! would take a balance outside i64 nano-dollars is refused with 422
//! `amount_out_of_range` before anything is written (balances, ledger,
//! memberships, keys, invites, the idempotency record), and reconciliation
//! sums past i64 exactly. Case 12 of issue 11.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// i64::MAX nano-dollars, as the API writes it.
const MAX_USD: &str = "9223372036.854775807";

/// Deposit `usd` (up to ~9.2e9) to `target` (`{"user_id": ..}` or
/// `{"team_id": ..}`) in deposits of at most $1e9 (B7).
async fn fill(g: &Gateway, target: Value, usd: &str) {
    let total = nanos(usd);
    let step = nanos("1000000000");
    let mut left = total;
    while left > 0 {
        let n = left.min(step);
        let mut body = target.clone();
        body["amount"] = json!(common::usd(n));
        body["kind"] = json!("stripe");
        let idem = tollgate::ids::new_id("idem");
        let r = g.deposit_raw(&idem, &body).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        left -= n;
    }
}

async fn refused(r: reqwest::Response) {
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "amount_out_of_range", "{v}");
}

async fn json_of(g: &Gateway, path: &str, token: &str) -> Value {
    let r = g.get(path, Some(token)).await;
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.json().await.unwrap()
}

#[tokio::test]
async fn a_deposit_past_the_range_is_refused_and_stays_refused() {
    let g = spawn_gateway().await;
    let u = g.user("rich@example.com").await;
    fill(&g, json!({"user_id": u.id}), MAX_USD).await;
    assert_eq!(g.balance(&u).await, (MAX_USD.to_string(), "0.00".into()));
    let before = g.reconcile().await;

    let body = json!({"user_id": u.id, "amount": "0.000000001", "kind": "stripe"});
    refused(g.deposit_raw("idem-over", &body).await).await;
    // No idempotency record was written: the retry is refused again, not
    // answered "the first result".
    refused(g.deposit_raw("idem-over", &body).await).await;
    // Promo fits its part alone; paid + promo does not.
    let promo = json!({"user_id": u.id, "amount": "1", "kind": "promo"});
    refused(g.deposit_raw("idem-promo", &promo).await).await;

    assert_eq!(g.balance(&u).await, (MAX_USD.to_string(), "0.00".into()));
    let after = g.reconcile().await;
    assert_eq!(after, before);
    assert_eq!(after["ok"], true);
}

#[tokio::test]
async fn a_join_past_the_range_is_refused_and_changes_nothing() {
    // Issue 11, case 12.
    let g = spawn_gateway().await;
    let owner = g.user("owner@example.com").await;
    let team = g.team(&owner, "Full").await;
    fill(&g, json!({"team_id": team}), "9000000000").await;
    let (joiner, key) = g.funded("joiner@example.com", "300000000").await;
    let token = g.invite(&team, &owner, &joiner.email, "member").await;

    let ledger_path = format!("/api/teams/{team}/ledger");
    let members_path = format!("/api/teams/{team}/members");
    let invites_path = format!("/api/teams/{team}/invites");
    let ledger = json_of(&g, &ledger_path, &owner.token).await;
    let members = json_of(&g, &members_path, &owner.token).await;
    let invites = json_of(&g, &invites_path, &owner.token).await;
    let keys = json_of(&g, "/api/keys", &joiner.token).await;
    let team_balance = g.team_balance(&team, &owner).await;
    let rec = g.reconcile().await;

    refused(g.accept(&joiner, &token).await).await;

    assert_eq!(json_of(&g, &ledger_path, &owner.token).await, ledger);
    assert_eq!(json_of(&g, &members_path, &owner.token).await, members);
    assert_eq!(json_of(&g, &invites_path, &owner.token).await, invites);
    assert_eq!(json_of(&g, "/api/keys", &joiner.token).await, keys);
    assert_eq!(g.team_balance(&team, &owner).await, team_balance);
    assert_eq!(
        g.balance(&joiner).await,
        ("300000000.00".to_string(), "0.00".to_string())
    );
    assert_eq!(g.me(&joiner).await["teams"], json!([]));
    assert_eq!(g.reconcile().await, rec);
    // The joiner's personal key still works on the proxy.
    let r = g.chat(&key, &chat_body("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    // The invite is still pending: once the joiner's balance fits (they
    // spend, or the team does), the same link works.
    let pending = invites.as_array().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["email"], joiner.email);
}

#[tokio::test]
async fn a_deletion_whose_payout_would_overflow_is_refused() {
    // D1 + B10: the team's balance cannot move to the Owner's paid.
    let g = spawn_gateway().await;
    let owner = g.user("owner@example.com").await;
    let team = g.team(&owner, "Payout").await;
    fill(&g, json!({"team_id": team}), "5000000000").await;
    // Personal deposits while in a team stay personal (B7).
    fill(&g, json!({"user_id": owner.id}), "5000000000").await;
    let (_, team_key) = g.team_key(&team, &owner, None).await;
    let invitee = g.user("later@example.com").await;
    g.invite(&team, &owner, &invitee.email, "member").await;

    let invites_path = format!("/api/teams/{team}/invites");
    let members_path = format!("/api/teams/{team}/members");
    let ledger_path = format!("/api/teams/{team}/ledger");
    let invites = json_of(&g, &invites_path, &owner.token).await;
    let members = json_of(&g, &members_path, &owner.token).await;
    let ledger = json_of(&g, &ledger_path, &owner.token).await;
    let rec = g.reconcile().await;

    refused(
        g.delete(&format!("/api/teams/{team}"), Some(&owner.token))
            .await,
    )
    .await;

    assert_eq!(g.team_balance(&team, &owner).await, "5000000000.00");
    assert_eq!(
        g.balance(&owner).await,
        ("5000000000.00".to_string(), "0.00".to_string())
    );
    assert_eq!(json_of(&g, &invites_path, &owner.token).await, invites);
    assert_eq!(json_of(&g, &members_path, &owner.token).await, members);
    assert_eq!(json_of(&g, &ledger_path, &owner.token).await, ledger);
    assert_eq!(g.reconcile().await, rec);
    // The team and its keys live on: a team key still works.
    let r = g.chat(&team_key, &chat_body("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn reconciliation_past_i64_is_exact() {
    // B8, B10: three wallets of $9e9 each: every total is past i64::MAX
    // nano-dollars, exact, and conservation holds.
    let g = spawn_gateway().await;
    for i in 0..3 {
        let u = g.user(&format!("w{i}@example.com")).await;
        fill(&g, json!({"user_id": u.id}), "9000000000").await;
    }
    let (_, key) = g.funded("spender@example.com", "1").await;
    let r = g.chat(&key, &chat_body("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let _ = r.bytes().await.unwrap();
    let rec = g.reconcile().await;
    assert_eq!(rec["deposits_total"], "27000000001.00");
    let usage = nanos(rec["usage_total"].as_str().unwrap());
    assert!(usage > 0);
    let balances = rec["balances_total"].as_str().unwrap();
    let expected = 27_000_000_001_000_000_000i128 - i128::from(usage);
    assert_eq!(
        balances,
        tollgate::money::WideNanos(expected).to_string(),
        "{rec}"
    );
    assert_eq!(rec["ok"], true);
}
