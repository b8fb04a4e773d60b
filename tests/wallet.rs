//! The wallet actor directly: a hold whose caller goes away mid-call is
//! released, never leaked (B6).

#![allow(
    clippy::too_many_lines,
    reason = "test code: one case reads best as one story"
)]
// Tests may panic on unexpected errors: that is how they fail.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tollgate::billing::{deposit, DepositKind};
use tollgate::clock::SystemClock;
use tollgate::money::Nanos;
use tollgate::store::memory::MemoryStore;
use tollgate::wallet::WalletRegistry;

#[tokio::test]
async fn a_hold_abandoned_while_waiting_for_the_actor_is_released() {
    let registry = WalletRegistry::new(
        Arc::new(MemoryStore::new()),
        Nanos(50_000_000),
        Duration::from_millis(5),
        Duration::from_secs(5),
        1,
        Arc::new(SystemClock),
    );
    let w = registry.get("user:u").await.unwrap();
    deposit(&w, Nanos(10_000_000_000), DepositKind::Stripe, "r", "d1")
        .await
        .unwrap();
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
