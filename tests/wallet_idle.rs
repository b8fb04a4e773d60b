//! PROTOTYPE: idle wallet actors stop and restart on demand, with nothing
//! lost and handles (as the key cache keeps them) still valid.
// Tests may panic on unexpected errors: that is how they fail.
#![allow(clippy::unwrap_used)]

#[path = "common/calls.rs"]
mod calls;
mod common;

use std::sync::Arc;
use std::time::Duration;

use calls::{funded_wallet, wallets};
use tollgate::money::Nanos;
use tollgate::pricing::Usage;
use tollgate::store::memory::MemoryStore;
use tollgate::store::{Store, UsageFacts};

fn facts() -> UsageFacts {
    UsageFacts {
        key_id: "k".into(),
        member_id: "m".into(),
        team_id: None,
        model: "gpt-4o-mini".into(),
        status: Default::default(),
        usage: Usage::default(),
    }
}

#[tokio::test]
async fn idle_actors_stop_and_restart_with_nothing_lost() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let reg = wallets(store.clone(), Nanos(0), Duration::from_millis(2), 7);
    let w = funded_wallet(&reg, "user:a", Nanos(10_000)).await;
    let hold = w.hold(1, Nanos(500)).await.unwrap();
    // Not idle: a hold is outstanding (and it was just used).
    assert_eq!(reg.stop_idle(Duration::ZERO).await, 0);
    hold.settle(Nanos(300), "req_1".into(), facts());
    // Not idle until the settlement is written.
    w.flush().await.unwrap();
    assert_eq!(
        reg.stop_idle(Duration::from_secs(60)).await,
        0,
        "used just now"
    );
    assert_eq!(reg.stop_idle(Duration::ZERO).await, 1);
    assert!(reg.running().is_empty());
    assert_eq!(store.wallet("user:a").await.unwrap().paid, Nanos(9_700));
    // The old handle (as a cached key keeps it) restarts the actor.
    assert!(!w.is_suspended());
    let hold = w.hold(2, Nanos(500)).await.unwrap();
    assert_eq!(reg.running().len(), 1);
    hold.settle(Nanos(200), "req_2".into(), facts());
    let v = w.snapshot().await.unwrap();
    assert_eq!((v.paid, v.held), (Nanos(9_500), Nanos(0)));
    w.flush().await.unwrap();
    assert_eq!(store.wallet("user:a").await.unwrap().paid, Nanos(9_500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_racing_the_idle_sweep_all_succeed() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let reg = Arc::new(wallets(
        store.clone(),
        Nanos(0),
        Duration::from_millis(1),
        7,
    ));
    let w = funded_wallet(&reg, "user:b", Nanos(1_000_000_000)).await;
    let sweeper = {
        let reg = reg.clone();
        tokio::spawn(async move {
            let mut stopped = 0;
            for _ in 0..2_000 {
                stopped += reg.stop_idle(Duration::ZERO).await;
                tokio::task::yield_now().await;
            }
            stopped
        })
    };
    let mut settled = 0i64;
    for i in 0..2_000u64 {
        let hold = w
            .hold(i, Nanos(10))
            .await
            .expect("a hold never fails for a stopped actor");
        hold.settle(Nanos(1), format!("req_{i}"), facts());
        settled += 1;
        if i % 10 == 0 {
            w.flush().await.unwrap();
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    let stopped = sweeper.await.unwrap();
    w.flush().await.unwrap();
    let v = w.snapshot().await.unwrap();
    assert_eq!(
        v.paid,
        Nanos(1_000_000_000 - settled),
        "stopped {stopped} times"
    );
    assert_eq!(store.wallet("user:b").await.unwrap().paid, v.paid);
    assert!(stopped > 0, "the sweep never caught the wallet idle");
}
