//! The memory store's `apply` as its ledger grows: the worst time one
//! flush-sized batch (350 settlements, 10 ms at 35,000 requests/s) takes,
//! per 105,000 entries, up to 2.1 million. Context for the proxy's tail
//! latency: a wallet's flush runs `apply` on a tokio worker under the
//! store's lock, so a slow `apply` stalls that worker (BENCHMARKS.md).
//!
//! Run: `cargo bench --bench store_apply`.

mod common;

use std::time::Instant;

use tollgate::money::Nanos;
use tollgate::pricing::Usage;
use tollgate::store::{EntryKind, LedgerEntry, UsageFacts, WalletBatch};

const BATCH: u64 = 350;
const BATCHES: u64 = 6_000;
const REPORT_EVERY: u64 = 300;

fn main() {
    let rt = common::runtime();
    let (_app, store) = common::app(common::config());
    let mut n = 0u64;
    let mut worst = 0f64;
    let mut total = 0f64;
    println!(
        "memory store: worst and mean apply of a {BATCH}-entry batch, per {} entries",
        BATCH * REPORT_EVERY
    );
    rt.block_on(async {
        for b in 0..BATCHES {
            let entries: Vec<LedgerEntry> = (0..BATCH)
                .map(|_| {
                    n += 1;
                    LedgerEntry {
                        id: format!("stl:{:016x}:{n}", 0x5eed_u64),
                        wallet_id: "user:bench".into(),
                        kind: EntryKind::Settlement,
                        paid: Nanos(-1_000),
                        promo: Nanos::ZERO,
                        at: chrono::Utc::now(),
                        reference: format!("req_{n:x}"),
                        usage: Some(UsageFacts {
                            key_id: "key_bench".into(),
                            member_id: "usr_bench".into(),
                            team_id: None,
                            model: "gpt-4o-mini".into(),
                            status: Default::default(),
                            usage: Usage {
                                input_tokens: 8,
                                cached_tokens: 0,
                                output_tokens: 16,
                            },
                        }),
                    }
                })
                .collect();
            let batch = WalletBatch {
                batch_id: format!("user:bench:{b}"),
                wallet_id: "user:bench".into(),
                entries,
                seq: None,
            };
            let t = Instant::now();
            store.apply(&batch).await.expect("apply");
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            worst = worst.max(ms);
            total += ms;
            if (b + 1) % REPORT_EVERY == 0 {
                println!(
                    "{n:>9} entries: worst {worst:>8.2} ms, mean {:>6.3} ms",
                    total / REPORT_EVERY as f64
                );
                worst = 0.0;
                total = 0.0;
            }
        }
    });
}
