//! The store contract's B10 cases (tests/store_contract.rs runs them on
//! both stores): a batch that would take a balance past i64 is refused
//! before any write, and money totals pass i64 exactly.

#![allow(clippy::unwrap_used, reason = "a test's unwrap is its failure report")]

use super::fixtures::*;
use tollgate::money::{Nanos, WideNanos};
use tollgate::store::*;

pub async fn apply_refuses_out_of_range_before_any_write(s: &dyn Store) {
    // B10: a part, or paid + promo, past i64 refuses the whole batch.
    let w = "team:tm_full";
    // In batches of at most 4e18 (the Redis counters' carry unit).
    let third = 3_000_000_000_000_000_000;
    for (i, n) in [third, third, i64::MAX - 10 - 2 * third]
        .into_iter()
        .enumerate()
    {
        let id = format!("dep_{i}");
        s.apply(&batch(&id, w, vec![deposit(&id, w, Nanos(n), Nanos::ZERO)]))
            .await
            .unwrap();
    }
    let before = s.wallet(w).await.unwrap();
    let totals = s.money_totals().await.unwrap();
    let refused = [
        // Paid past i64.
        vec![deposit("dep_a", w, Nanos(11), Nanos::ZERO)],
        // Promo fits alone; the balance does not.
        vec![deposit("dep_b", w, Nanos::ZERO, Nanos(11))],
        // A settlement (usage counters) before the overflow: nothing lands.
        vec![
            settlement("stl_c", w, "key_a", "usr_x", Nanos(1), at(2, 9)),
            deposit("dep_c", w, Nanos(12), Nanos::ZERO),
        ],
    ];
    for (i, entries) in refused.into_iter().enumerate() {
        let r = s.apply(&batch(&format!("x{i}"), w, entries)).await;
        assert!(matches!(r, Err(StoreError::OutOfRange(_))), "{r:?}");
    }
    assert_eq!(s.wallet(w).await.unwrap(), before);
    assert_eq!(s.ledger(w).await.unwrap().len(), 3);
    assert_eq!(s.usage_rows(w, date(1)).await.unwrap(), vec![]);
    assert_eq!(s.money_totals().await.unwrap(), totals);
    // To the very edge fits; a refused batch id was not recorded.
    let (applied, after) = s
        .apply(&batch(
            "x0",
            w,
            vec![deposit("dep_a", w, Nanos(10), Nanos::ZERO)],
        ))
        .await
        .unwrap();
    assert_eq!((applied, after.paid), (Applied::Now, Nanos(i64::MAX)));
    let r = s
        .apply(&batch(
            "x4",
            w,
            vec![deposit("dep_d", w, Nanos::ZERO, Nanos(1))],
        ))
        .await;
    assert!(matches!(r, Err(StoreError::OutOfRange(_))), "{r:?}");
}

pub async fn money_totals_pass_i64_exactly(s: &dyn Store) {
    // B8, B10: three wallets of 9e18 nanos each; every total is past
    // i64::MAX and exact (the Redis counters carry, see apply.lua).
    let third = Nanos(3_000_000_000_000_000_000);
    for u in 0..3 {
        let w = format!("user:usr_{u}");
        for d in 0..3 {
            let id = format!("dep_{u}_{d}");
            s.apply(&batch(&id, &w, vec![deposit(&id, &w, third, Nanos::ZERO)]))
                .await
                .unwrap();
        }
        let id = format!("stl_{u}");
        s.apply(&batch(
            &id,
            &w,
            vec![settlement(&id, &w, "key_a", "usr_x", Nanos(7), at(2, 9))],
        ))
        .await
        .unwrap();
    }
    let t = s.money_totals().await.unwrap();
    let deposits = 27_000_000_000_000_000_000i128;
    assert_eq!(t.deposits, WideNanos(deposits));
    assert_eq!(t.usage, WideNanos(21));
    assert_eq!(t.balances, WideNanos(deposits - 21));
    assert_eq!(t.deposits.to_string(), "27000000000.00");
}
