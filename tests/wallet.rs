//! The wallet actor directly: a hold whose caller goes away mid-call is
//! released, never leaked (B6).

// Tests may panic on unexpected errors: that is how they fail.
#![allow(clippy::unwrap_used)]

#[path = "common/calls.rs"]
mod calls;
mod common;

use std::sync::Arc;
use std::time::Duration;

use calls::{funded_wallet, wallets};
use futures_util::FutureExt;
use tollgate::money::Nanos;
use tollgate::store::memory::MemoryStore;

#[tokio::test]
async fn a_hold_abandoned_while_waiting_for_the_actor_is_released() {
    let store = Arc::new(MemoryStore::new());
    let registry = wallets(store, Nanos(50_000_000), Duration::from_millis(5), 1);
    let w = funded_wallet(&registry, "user:u", Nanos(10_000_000_000)).await;
    for i in 0..100 {
        // Polled once: the Hold message is sent, then the caller vanishes
        // (a client that disconnected) before the answer.
        assert!(w.hold(i, Nanos(1_000_000_000_000)).now_or_never().is_none());
    }
    let v = w.snapshot().await.unwrap();
    assert_eq!(v.held, Nanos::ZERO);
    assert_eq!(v.balance(), Nanos(10_000_000_000));
    // And the wallet still admits.
    let h = w.hold(1000, Nanos(1)).await.unwrap();
    h.release();
}
