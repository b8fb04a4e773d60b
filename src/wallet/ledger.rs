//! The wallet's arithmetic, pure: no I/O, no clock, no async. The actor
//! (actor.rs) owns one `Ledger` and is its only writer; every money rule of
//! a single wallet (B1, B2, B6) is decided here and unit-tested alone.

use crate::money::Nanos;
use crate::store::Part;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    /// Balance minus outstanding holds is at or below the threshold (B2, B6).
    #[error("insufficient balance")]
    Insufficient,
    /// The wallet is closing (team deletion, D1): no new holds.
    #[error("wallet closed")]
    Closed,
    /// The store has refused writes for too long, or the actor is gone:
    /// admitting more would leave spend unpersisted.
    #[error("wallet unavailable")]
    Unavailable,
    /// An amount would overflow the balance.
    #[error("amount out of range")]
    Overflow,
}

/// One wallet's balance and outstanding holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ledger {
    pub paid: Nanos,
    pub promo: Nanos,
    /// Sum of outstanding holds.
    pub held: Nanos,
    pub threshold: Nanos,
}

/// How a settled cost was drawn: promo first, then paid (B1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Debit {
    pub promo: Nanos,
    pub paid: Nanos,
}

impl Ledger {
    pub fn new(paid: Nanos, promo: Nanos, threshold: Nanos) -> Ledger {
        Ledger {
            paid,
            promo,
            held: Nanos::ZERO,
            threshold,
        }
    }

    pub fn balance(&self) -> Nanos {
        self.paid + self.promo
    }

    /// What new holds may still draw on.
    pub fn available(&self) -> Nanos {
        self.balance() - self.held
    }

    /// B2: at or below the threshold, every key on this wallet is refused.
    pub fn suspended(&self) -> bool {
        self.balance() <= self.threshold
    }

    /// B6: admit while balance minus outstanding holds is above the
    /// threshold, then reserve `amount`. So concurrent requests can take the
    /// wallet below the threshold by at most one request's cost.
    pub fn hold(&mut self, amount: Nanos) -> Result<(), WalletError> {
        if self.available() <= self.threshold {
            return Err(WalletError::Insufficient);
        }
        self.held = self.held.checked_add(amount).ok_or(WalletError::Overflow)?;
        Ok(())
    }

    pub fn release(&mut self, amount: Nanos) {
        self.held -= amount;
    }

    /// Release `held` and debit `cost`, promo first, then paid (B1). Paid
    /// may go negative (a debt): the cost of a served request is never lost.
    pub fn settle(&mut self, held: Nanos, cost: Nanos) -> Debit {
        self.release(held);
        let from_promo = if self.promo.is_positive() {
            cost.min(self.promo)
        } else {
            Nanos::ZERO
        };
        let debit = Debit {
            promo: from_promo,
            paid: cost - from_promo,
        };
        self.promo -= debit.promo;
        self.paid -= debit.paid;
        debit
    }

    /// Add a signed amount to one part (deposits, transfers).
    pub fn credit(&mut self, part: Part, amount: Nanos) -> Result<(), WalletError> {
        let slot = match part {
            Part::Paid => &mut self.paid,
            Part::Promo => &mut self.promo,
        };
        *slot = slot.checked_add(amount).ok_or(WalletError::Overflow)?;
        Ok(())
    }

    /// T3/I5: the paid balance that may leave the wallet: positive, and net
    /// of holds still outstanding on it (promo covers holds first).
    pub fn movable_paid(&self) -> Nanos {
        let held_beyond_promo = (self.held - self.promo.max(Nanos::ZERO)).max(Nanos::ZERO);
        (self.paid - held_beyond_promo).max(Nanos::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Nanos = Nanos(50_000_000);

    fn usd(cents: i64) -> Nanos {
        Nanos(cents * 10_000_000)
    }

    #[test]
    fn threshold_is_inclusive() {
        let mut l = Ledger::new(usd(5), Nanos::ZERO, T);
        assert!(l.suspended());
        assert_eq!(l.hold(Nanos(1)), Err(WalletError::Insufficient));
        l.credit(Part::Paid, Nanos(1_000_000)).unwrap();
        assert!(!l.suspended());
        assert_eq!(l.hold(Nanos(1)), Ok(()));
    }

    #[test]
    fn holds_count_against_admission() {
        let mut l = Ledger::new(usd(100), Nanos::ZERO, T);
        l.hold(usd(90)).unwrap();
        l.hold(usd(10)).unwrap(); // available 0.10 > 0.05: admitted
        assert_eq!(l.hold(Nanos(1)), Err(WalletError::Insufficient));
        l.release(usd(10));
        assert_eq!(l.hold(Nanos(1)), Ok(()));
    }

    #[test]
    fn promo_pays_first_then_paid_and_debt_stays() {
        let mut l = Ledger::new(usd(100), usd(30), T);
        l.hold(usd(50)).unwrap();
        let d = l.settle(usd(50), usd(40));
        assert_eq!(
            d,
            Debit {
                promo: usd(30),
                paid: usd(10)
            }
        );
        assert_eq!(
            (l.promo, l.paid, l.held),
            (Nanos::ZERO, usd(90), Nanos::ZERO)
        );
        let d = l.settle(Nanos::ZERO, usd(100));
        assert_eq!(d.paid, usd(100));
        assert_eq!(l.paid, usd(-10));
        assert_eq!(l.movable_paid(), Nanos::ZERO);
    }

    #[test]
    fn movable_paid_is_net_of_holds_beyond_promo() {
        let mut l = Ledger::new(usd(100), usd(10), T);
        l.hold(usd(25)).unwrap();
        assert_eq!(l.movable_paid(), usd(85));
        l.release(usd(25));
        assert_eq!(l.movable_paid(), usd(100));
    }
}
