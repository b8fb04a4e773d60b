//! Money between wallets survives a crash between its two halves: a
//! transfer written but unfinished is finished at the next start, never
//! doubled, and the membership change comes with it (DESIGN "Money
//! between wallets"). The crash is simulated by writing, straight into the
//! store, exactly what a process that died at each point would have left.

// Tests may panic on unexpected errors: that is how they fail.
#![allow(clippy::unwrap_used)]

#[path = "common/calls.rs"]
mod calls;
mod common;

use std::sync::Arc;

use calls::*;
use chrono::Utc;
use common::*;
use tollgate::money::Nanos;
use tollgate::pricing::Pricing;
use tollgate::store::memory::MemoryStore;
use tollgate::store::*;

/// How far the dead process got.
#[derive(Clone, Copy, Debug)]
enum DiedAfter {
    Record,
    Withdraw,
    Credit,
}

async fn restart(store: Arc<dyn Store>, upstream: &str) -> tollgate::Running {
    let pricing = Pricing::parse(PRICING, "config/pricing.toml").unwrap();
    tollgate::start(test_config(upstream), store, pricing)
        .await
        .unwrap()
}

fn entry(id: String, wallet: &str, kind: EntryKind, paid: i64, reference: &str) -> LedgerEntry {
    LedgerEntry {
        id,
        wallet_id: wallet.to_string(),
        kind,
        paid: Nanos(paid),
        promo: Nanos::ZERO,
        at: Utc::now(),
        reference: reference.to_string(),
        usage: None,
    }
}

async fn apply(store: &dyn Store, e: LedgerEntry) {
    let batch = WalletBatch::single(&e);
    store.apply(&batch).await.unwrap();
}

async fn create_team_interrupted(died: DiedAfter) {
    let mock = spawn_mock().await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let first = restart(store.clone(), &mock.url).await;
    let api = Api::new(&first.url());
    let (a, key) = api.funded("a@example.com", "10").await;
    first.stop().await.unwrap();

    // What a process that died while creating a team left behind.
    let wallet = format!("user:{}", a.id);
    let team = TeamRecord {
        id: "team_crashed".into(),
        name: "Crashed".into(),
        owner_id: a.id.clone(),
        created_at: Utc::now(),
        deleted_at: None,
    };
    let t = TransferRecord {
        id: "xfer_1".into(),
        from_wallet: wallet.clone(),
        to_wallet: "team:team_crashed".into(),
        op: TransferOp::CreateTeam { team },
        created_at: Utc::now(),
    };
    store.put_transfer(&t).await.unwrap();
    if matches!(died, DiedAfter::Withdraw | DiedAfter::Credit) {
        let out = entry(
            "xfer:xfer_1:out".into(),
            &wallet,
            EntryKind::TransferOut,
            -10_000_000_000,
            "xfer_1",
        );
        apply(&*store, out).await;
    }
    if matches!(died, DiedAfter::Credit) {
        let inn = entry(
            "xfer:xfer_1:in".into(),
            "team:team_crashed",
            EntryKind::TransferIn,
            10_000_000_000,
            "xfer_1",
        );
        apply(&*store, inn).await;
    }

    let second = restart(store.clone(), &mock.url).await;
    let api = Api::new(&second.url());
    assert!(
        store.unfinished_transfers().await.unwrap().is_empty(),
        "{died:?}: recovery finished it"
    );
    let me = api.me(&a).await;
    assert_eq!(me["owned_team_id"], "team_crashed", "{died:?}");
    assert_eq!(me["balance"]["paid"], "0.00", "{died:?}");
    assert_eq!(
        api.team_balance("team_crashed", &a).await,
        "10.00",
        "{died:?}: moved once"
    );
    let keys = get_json(&api, "/api/keys", &a.token).await;
    assert_eq!(keys[0]["status"], "archived", "{died:?}");
    assert_eq!(chat_status(&api, &key, &[]).await, 401);
    let rec = api.reconcile().await;
    assert_eq!(rec["ok"], true, "{died:?}");
    assert_eq!(rec["balances_total"], "10.00");
    let out = store.ledger(&wallet).await.unwrap();
    assert_eq!(
        out.iter()
            .filter(|e| e.kind == EntryKind::TransferOut)
            .count(),
        1,
        "{died:?}"
    );
    second.stop().await.unwrap();
}

#[tokio::test]
async fn a_create_interrupted_after_its_record_is_finished() {
    create_team_interrupted(DiedAfter::Record).await;
}

#[tokio::test]
async fn a_create_interrupted_between_the_halves_is_finished_not_doubled() {
    create_team_interrupted(DiedAfter::Withdraw).await;
}

#[tokio::test]
async fn a_create_interrupted_after_both_halves_is_not_doubled() {
    create_team_interrupted(DiedAfter::Credit).await;
}

#[tokio::test]
async fn a_deletion_interrupted_between_the_halves_pays_out_once() {
    let mock = spawn_mock().await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let first = restart(store.clone(), &mock.url).await;
    let api = Api::new(&first.url());
    let (a, _) = api.funded("a@example.com", "7").await;
    let team = api.team(&a, "T").await;
    let b = api.user("b@example.com").await;
    api.join(&team, &a, &b, "member").await;
    first.stop().await.unwrap();

    // Died after the team's money left, before the owner got it.
    let t = TransferRecord {
        id: "xfer_del".into(),
        from_wallet: format!("team:{team}"),
        to_wallet: format!("user:{}", a.id),
        op: TransferOp::DeleteTeam {
            team_id: team.clone(),
            owner_id: a.id.clone(),
        },
        created_at: Utc::now(),
    };
    store.put_transfer(&t).await.unwrap();
    apply(
        &*store,
        entry(
            "xfer:xfer_del:out".into(),
            &format!("team:{team}"),
            EntryKind::TransferOut,
            -7_000_000_000,
            "xfer_del",
        ),
    )
    .await;

    let second = restart(store.clone(), &mock.url).await;
    let api = Api::new(&second.url());
    assert_eq!(api.balance(&a).await.0, "7.00");
    assert_eq!(
        get_status(&api, &format!("/api/teams/{team}"), Some(&a.token)).await,
        404
    );
    assert!(api.me(&b).await["teams"].as_array().unwrap().is_empty());
    let rec = api.reconcile().await;
    assert_eq!(rec["ok"], true);
    assert_eq!(rec["balances_total"], "7.00");
    second.stop().await.unwrap();
}
