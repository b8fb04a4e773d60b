//! The wallet's arithmetic, pure: no I/O, no clock, no async. The actor
//! (actor.rs) owns one `Ledger` and is its only writer; every money rule of
//! a single wallet (B1, B2, B6) is decided here and unit-tested alone.

use crate::money::{credit_fits, Nanos, OutOfRange};
use crate::store::{LedgerEntry, Part};

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
    /// B10: the change would take a balance (a part, or paid + promo)
    /// outside i64 nano-dollars; refused before anything is written.
    #[error("{}", crate::money::OutOfRange)]
    OutOfRange,
    /// Q1: a spend limit of the key or its member would be passed; its
    /// period resets at `resets_at` (never, for `total`).
    #[error("spend limit reached")]
    QuotaExceeded {
        resets_at: Option<chrono::DateTime<chrono::Utc>>,
    },
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

/// How a settled cost was drawn: promo first, then paid (B1); also what a
/// transfer out takes from each part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Debit {
    pub promo: Nanos,
    pub paid: Nanos,
}

/// How much a transfer out takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithdrawRule {
    /// T3, I5: the positive paid balance net of outstanding holds.
    MovablePaid,
    /// D1: everything left (the wallet is closed, no holds remain).
    Everything,
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
        self.held = self
            .held
            .checked_add(amount)
            .ok_or(WalletError::OutOfRange)?;
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

    /// Add a signed amount to one part (deposits, transfers); B10: refused
    /// whole if a part or the balance would leave i64.
    pub fn credit(&mut self, part: Part, amount: Nanos) -> Result<(), WalletError> {
        match part {
            Part::Paid => self.credit_both(amount, Nanos::ZERO),
            Part::Promo => self.credit_both(Nanos::ZERO, amount),
        }
    }

    /// B10: whether credits of `paid` and `promo` (i128: several in flight
    /// may be summed) would keep both parts and the balance in i64.
    pub fn fits(&self, paid: i128, promo: i128) -> Result<(), WalletError> {
        credit_fits(self.paid, self.promo, paid, promo)
            .map_err(|OutOfRange| WalletError::OutOfRange)
    }

    /// T3/I5: the paid balance that may leave the wallet: positive, and net
    /// of holds still outstanding on it (promo covers holds first).
    pub fn movable_paid(&self) -> Nanos {
        let held_beyond_promo = (self.held - self.promo.max(Nanos::ZERO)).max(Nanos::ZERO);
        (self.paid - held_beyond_promo).max(Nanos::ZERO)
    }

    /// What a transfer out under `rule` takes from each part.
    pub fn withdrawal(&self, rule: WithdrawRule) -> Debit {
        match rule {
            WithdrawRule::MovablePaid => Debit {
                promo: Nanos::ZERO,
                paid: self.movable_paid(),
            },
            // Holds still open (a request outlasting the close wait) keep
            // their reserve here to settle against.
            WithdrawRule::Everything => {
                let promo = self.promo;
                let reserve = (self.held - promo.max(Nanos::ZERO)).max(Nanos::ZERO);
                let paid = if reserve.is_positive() {
                    (self.paid - reserve).max(Nanos::ZERO)
                } else {
                    self.paid
                };
                Debit { promo, paid }
            }
        }
    }

    /// Take a withdrawal from memory at once: holds admitted from here on
    /// cannot spend it.
    pub fn take(&mut self, w: Debit) {
        self.paid -= w.paid;
        self.promo -= w.promo;
    }

    /// Undo a change this wallet made in memory but the store did not keep
    /// (or had kept before): `paid` and `promo` are the ledger entry's own
    /// signed amounts, negative for a transfer out.
    pub fn give_back(&mut self, paid: Nanos, promo: Nanos) {
        self.paid -= paid;
        self.promo -= promo;
    }

    /// A durable credit applied to memory: paid, then promo (a deposit or
    /// a transfer in).
    /// Checked whole first (B10): a refused credit changes neither part.
    pub fn credit_both(&mut self, paid: Nanos, promo: Nanos) -> Result<(), WalletError> {
        self.fits(paid.0.into(), promo.0.into())?;
        // In range, checked just above: these sums cannot saturate.
        self.paid += paid;
        self.promo += promo;
        Ok(())
    }

    /// Adopt a stored balance plus what is settled here but not yet
    /// written (`unwritten`, exactly known).
    pub fn rebase(&mut self, stored_paid: Nanos, stored_promo: Nanos, unwritten: &[LedgerEntry]) {
        let (paid, promo) = unwritten
            .iter()
            .fold((Nanos::ZERO, Nanos::ZERO), |(p, q), e| {
                (p + e.paid, q + e.promo)
            });
        self.paid = stored_paid + paid;
        self.promo = stored_promo + promo;
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

    #[test]
    fn withdrawing_movable_paid_leaves_promo_and_the_holds_reserve() {
        let mut l = Ledger::new(usd(100), usd(10), T);
        l.hold(usd(25)).unwrap();
        let w = l.withdrawal(WithdrawRule::MovablePaid);
        assert_eq!(
            w,
            Debit {
                promo: Nanos::ZERO,
                paid: usd(85)
            }
        );
        l.take(w);
        assert_eq!((l.paid, l.promo), (usd(15), usd(10)));
        // The store did not keep it: the entry's amounts (negative) undone.
        l.give_back(Nanos::ZERO - w.paid, Nanos::ZERO - w.promo);
        assert_eq!((l.paid, l.promo), (usd(100), usd(10)));
    }

    #[test]
    fn withdrawing_everything_keeps_only_open_holds_beyond_promo() {
        let l = Ledger::new(usd(100), usd(10), T);
        assert_eq!(
            l.withdrawal(WithdrawRule::Everything),
            Debit {
                promo: usd(10),
                paid: usd(100)
            }
        );
        let mut l = Ledger::new(usd(100), usd(10), T);
        l.hold(usd(30)).unwrap();
        assert_eq!(
            l.withdrawal(WithdrawRule::Everything),
            Debit {
                promo: usd(10),
                paid: usd(80)
            }
        );
        // With nothing held, paid goes as it is, a debt too.
        let l = Ledger::new(usd(-5), Nanos::ZERO, T);
        assert_eq!(l.withdrawal(WithdrawRule::Everything).paid, usd(-5));
        let mut l = Ledger::new(usd(1), Nanos::ZERO, Nanos::ZERO);
        l.hold(usd(3)).unwrap();
        assert_eq!(l.withdrawal(WithdrawRule::Everything).paid, Nanos::ZERO);
    }

    #[test]
    fn credits_apply_paid_then_promo_and_refuse_overflow() {
        let mut l = Ledger::new(usd(1), usd(2), T);
        l.credit_both(usd(10), usd(20)).unwrap();
        assert_eq!((l.paid, l.promo), (usd(11), usd(22)));
        // Promo would overflow: neither part moves (B10).
        assert_eq!(
            l.credit_both(usd(1), Nanos(i64::MAX)),
            Err(WalletError::OutOfRange)
        );
        assert_eq!((l.paid, l.promo), (usd(11), usd(22)));
        // Each part fits, their sum does not: refused too.
        let mut l = Ledger::new(Nanos(i64::MAX / 2 + 1), Nanos::ZERO, T);
        assert_eq!(
            l.credit(Part::Promo, Nanos(i64::MAX / 2 + 1)),
            Err(WalletError::OutOfRange)
        );
        assert_eq!(l.promo, Nanos::ZERO);
    }

    #[test]
    fn rebase_adds_the_unwritten_entries_to_the_stored_balance() {
        let entry = |paid, promo| LedgerEntry {
            id: "e".into(),
            wallet_id: "user:u".into(),
            kind: crate::store::EntryKind::Settlement,
            paid,
            promo,
            at: chrono::DateTime::UNIX_EPOCH,
            reference: String::new(),
            usage: None,
        };
        let mut l = Ledger::new(usd(100), usd(100), T);
        l.hold(usd(1)).unwrap();
        l.rebase(
            usd(50),
            usd(5),
            &[entry(usd(-3), usd(-1)), entry(usd(-2), Nanos::ZERO)],
        );
        assert_eq!((l.paid, l.promo, l.held), (usd(45), usd(4), usd(1)));
    }

    proptest::proptest! {
        /// B10: a credit either applies exactly (parts and balance in i64,
        /// computed in i128) or is refused and changes nothing.
        #[test]
        fn credits_apply_exactly_or_change_nothing(
            paid in proptest::num::i64::ANY,
            promo in proptest::num::i64::ANY,
            add_paid in proptest::num::i64::ANY,
            add_promo in proptest::num::i64::ANY,
        ) {
            let wide = |a: i64, b: i64| i128::from(a) + i128::from(b);
            proptest::prop_assume!(i64::try_from(wide(paid, promo)).is_ok());
            let mut l = Ledger::new(Nanos(paid), Nanos(promo), T);
            let (p, q) = (wide(paid, add_paid), wide(promo, add_promo));
            let fits = [p, q, p + q].iter().all(|v| i64::try_from(*v).is_ok());
            match l.credit_both(Nanos(add_paid), Nanos(add_promo)) {
                Ok(()) => {
                    proptest::prop_assert!(fits);
                    proptest::prop_assert_eq!((i128::from(l.paid.0), i128::from(l.promo.0)), (p, q));
                }
                Err(e) => {
                    proptest::prop_assert!(!fits);
                    proptest::prop_assert_eq!(e, WalletError::OutOfRange);
                    proptest::prop_assert_eq!((l.paid, l.promo), (Nanos(paid), Nanos(promo)));
                }
            }
        }
    }
}
