//! N2: low-balance thresholds, kept in the wallet's actor. The actor
//! serialises every balance change, so a downward crossing is seen exactly
//! once however many requests settle at the same time: each threshold is
//! armed while the balance is at or above it, fires (`balance.low`, into
//! the event log, off the mailbox) when the balance drops below it, and is
//! re-armed when the balance is back at or above it (a top-up). A
//! threshold set while the balance is already below it starts disarmed:
//! there was no crossing. Checking costs a pass over at most 10 entries and
//! allocates nothing unless one fires.

use crate::money::Nanos;
use crate::store::{EventRecord, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    threshold: Nanos,
    armed: bool,
}

/// A wallet's thresholds and whether each is armed.
#[derive(Debug, Default, Clone)]
pub struct AlertBook {
    entries: Vec<Entry>,
}

impl AlertBook {
    /// The stored thresholds of `wallet_id`, armed against `balance`; none
    /// if the store cannot be read (logged: alerts resume on the next set).
    pub async fn load(store: &dyn Store, wallet_id: &str, balance: Nanos) -> AlertBook {
        let mut book = AlertBook::default();
        match store.alerts(wallet_id).await {
            Ok(t) => book.set(&t, balance),
            Err(e) => {
                tracing::warn!(wallet = %wallet_id, error = %e, "alert thresholds not loaded")
            }
        }
        book
    }

    /// Replace the thresholds; one kept from before keeps its state.
    pub fn set(&mut self, thresholds: &[Nanos], balance: Nanos) {
        let old = std::mem::take(&mut self.entries);
        self.entries = thresholds
            .iter()
            .map(|&threshold| Entry {
                threshold,
                armed: old
                    .iter()
                    .find(|e| e.threshold == threshold)
                    .map_or(balance >= threshold, |e| e.armed),
            })
            .collect();
    }

    /// After a balance change: re-arm what the balance is back above, and
    /// call `fire` for each armed threshold it dropped below.
    pub fn check(&mut self, balance: Nanos, mut fire: impl FnMut(Nanos)) {
        for e in &mut self.entries {
            if balance >= e.threshold {
                e.armed = true;
            } else if e.armed {
                e.armed = false;
                fire(e.threshold);
            }
        }
    }
}

/// The event of one crossing: logged under the team, or under the personal
/// wallet's id (`user:ID`), as the notifier expects (src/notify).
pub fn low_event(
    wallet_id: &str,
    team_id: Option<&str>,
    threshold: Nanos,
    balance: Nanos,
    at: chrono::DateTime<chrono::Utc>,
) -> EventRecord {
    EventRecord {
        id: crate::ids::new_id("evt"),
        team_id: team_id.unwrap_or(wallet_id).to_string(),
        kind: "balance.low".into(),
        at,
        data: serde_json::json!({"threshold": threshold, "balance": balance}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(n: i64) -> Nanos {
        Nanos(n * 1_000_000_000)
    }

    #[test]
    fn fires_once_per_downward_crossing_and_rearms_above() {
        let mut b = AlertBook::default();
        b.set(&[usd(5), usd(10)], usd(20));
        let mut fired = Vec::new();
        for bal in [15, 9, 8, 7, 12, 9, 4, 3, 20, 1] {
            b.check(usd(bal), |t| fired.push((bal, t)));
        }
        assert_eq!(
            fired,
            [
                (9, usd(10)),
                (9, usd(10)),
                (4, usd(5)),
                (1, usd(5)),
                (1, usd(10))
            ]
        );
        // Set below the balance: disarmed, no alert until a top-up.
        let mut b = AlertBook::default();
        b.set(&[usd(5)], usd(1));
        let mut n = 0;
        b.check(usd(0), |_| n += 1);
        assert_eq!(n, 0);
        b.check(usd(6), |_| n += 1);
        b.check(usd(4), |_| n += 1);
        assert_eq!(n, 1);
    }
}
