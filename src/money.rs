//! Money: exact USD amounts. `Money` (a `rust_decimal` newtype) is what the
//! API reads and writes, always as a JSON string; `Nanos` (integer
//! nano-dollars) is what wallets, the ledger and the store carry, so a
//! balance is plain integer arithmetic and crosses into Redis as an integer.
//!
//! Every conversion from a computed cost to `Nanos` names its rounding
//! (`to_nanos_ceil`): the provider never under-bills by a fraction.

use std::fmt;
use std::str::FromStr;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Nano-dollars per dollar (10^9).
pub const NANOS_PER_USD: i64 = 1_000_000_000;

/// The largest single deposit accepted (B7): one billion dollars.
pub const MAX_DEPOSIT_USD: i64 = 1_000_000_000;

/// An exact amount of US dollars at nano-dollar resolution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(pub i64);

impl Nanos {
    pub const ZERO: Nanos = Nanos(0);

    pub fn to_decimal(self) -> Decimal {
        Decimal::new(self.0, 9)
    }

    pub fn checked_add(self, other: Nanos) -> Option<Nanos> {
        self.0.checked_add(other.0).map(Nanos)
    }

    pub fn checked_sub(self, other: Nanos) -> Option<Nanos> {
        self.0.checked_sub(other.0).map(Nanos)
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }
}

// The operators saturate. They are for values that are provably bounded
// (a settlement's cost within its hold, a withdrawal within the balance it
// is taken from, a hold's release): there they never reach i64's ends.
// Anything that can grow a balance or a total without such a bound uses
// `checked_add` / `credit_fits` (B10) or sums in `WideNanos` (i128).
impl std::ops::Add for Nanos {
    type Output = Nanos;
    fn add(self, rhs: Nanos) -> Nanos {
        Nanos(self.0.saturating_add(rhs.0))
    }
}

impl std::ops::Sub for Nanos {
    type Output = Nanos;
    fn sub(self, rhs: Nanos) -> Nanos {
        Nanos(self.0.saturating_sub(rhs.0))
    }
}

impl std::ops::AddAssign for Nanos {
    fn add_assign(&mut self, rhs: Nanos) {
        *self = *self + rhs;
    }
}

impl std::ops::SubAssign for Nanos {
    fn sub_assign(&mut self, rhs: Nanos) {
        *self = *self - rhs;
    }
}

impl std::iter::Sum for Nanos {
    fn sum<I: Iterator<Item = Nanos>>(iter: I) -> Nanos {
        iter.fold(Nanos::ZERO, |a, b| a + b)
    }
}

/// Shown as dollars with at least two decimals and no trailing zeros past
/// them: `12.50`, `0.000150`, `-0.000000001`.
impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = self.to_decimal().normalize();
        if d.scale() < 2 {
            d.rescale(2);
        }
        write!(f, "{d}")
    }
}

impl Serialize for Nanos {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Nanos {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_amount(&s, AmountRules::ANY).map_err(serde::de::Error::custom)
    }
}

/// B10: an operation would take a balance outside i64 nano-dollars
/// (about ±9.22 billion USD). Refused before anything is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "amount out of range: a balance would leave what the gateway holds (about ±9.22 billion USD)"
)]
pub struct OutOfRange;

/// B10: whether a wallet of `paid` and `promo` can take a credit of
/// `add_paid` and `add_promo` (signed, summed in i128 so that credits in
/// flight can be counted in): each part and their sum must stay in i64.
pub fn credit_fits(
    paid: Nanos,
    promo: Nanos,
    add_paid: i128,
    add_promo: i128,
) -> Result<(), OutOfRange> {
    let in_range = |v: i128| i64::try_from(v).is_ok();
    let paid = i128::from(paid.0) + add_paid;
    let promo = i128::from(promo.0) + add_promo;
    if in_range(paid) && in_range(promo) && in_range(paid + promo) {
        Ok(())
    } else {
        Err(OutOfRange)
    }
}

/// A total of many balances (B8, B10): i128 nano-dollars, so a sum over
/// every wallet never overflows or clips. Written like `Nanos`: a string
/// of dollars with at least two decimals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WideNanos(pub i128);

impl WideNanos {
    pub const ZERO: WideNanos = WideNanos(0);
}

/// Exact: i128 holds the sum of 2^64 i64 balances.
impl std::ops::Sub for WideNanos {
    type Output = WideNanos;
    fn sub(self, rhs: WideNanos) -> WideNanos {
        WideNanos(self.0 - rhs.0)
    }
}

impl From<Nanos> for WideNanos {
    fn from(n: Nanos) -> WideNanos {
        WideNanos(i128::from(n.0))
    }
}

impl fmt::Display for WideNanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let per = NANOS_PER_USD as u128;
        let frac = format!("{:09}", abs % per);
        let frac = frac.trim_end_matches('0');
        write!(f, "{sign}{}.{frac:0<2}", abs / per)
    }
}

impl Serialize for WideNanos {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Round a computed cost up to a whole nano-dollar (B5). With
/// `nanos_ceil`, the only place a cost is rounded; it rounds once.
pub fn to_nanos_ceil(usd: Decimal) -> Nanos {
    nanos_ceil(usd * Decimal::from(NANOS_PER_USD))
}

/// Round a cost already counted in nano-dollars up to a whole one (B5).
/// Pricing works in nano-dollars per token, so its costs come here without
/// a division by 10^9 and a multiplication back (each a 96-bit `Decimal`
/// operation on every request, and the division could round).
pub fn nanos_ceil(nanos: Decimal) -> Nanos {
    let whole = nanos.round_dp_with_strategy(0, RoundingStrategy::ToPositiveInfinity);
    Nanos(whole.to_i64().unwrap_or(i64::MAX))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount must be a decimal string such as \"12.50\"")]
    NotADecimal,
    #[error("amount must be above zero")]
    NotPositive,
    #[error("amount may have at most 9 fractional digits")]
    TooPrecise,
    #[error("amount may be at most 1000000000")]
    TooLarge,
}

/// What a parsed amount must satisfy.
#[derive(Clone, Copy, Debug)]
pub struct AmountRules {
    pub positive: bool,
    pub max_usd: Option<i64>,
}

impl AmountRules {
    /// Deposits (B7): above zero, at most one billion.
    pub const DEPOSIT: AmountRules = AmountRules {
        positive: true,
        max_usd: Some(MAX_DEPOSIT_USD),
    };
    /// Any representable amount (thresholds, config).
    pub const ANY: AmountRules = AmountRules {
        positive: false,
        max_usd: None,
    };
}

/// Parse a decimal string exactly. Refuses exponents, signs on deposits,
/// more than 9 fractional digits and anything that is not plain digits.
///
/// ```
/// use tollgate::money::{parse_amount, AmountRules, Nanos};
/// assert_eq!(parse_amount("12.50", AmountRules::DEPOSIT), Ok(Nanos(12_500_000_000)));
/// assert!(parse_amount("1e3", AmountRules::DEPOSIT).is_err());
/// assert_eq!(Nanos(12_500_000_000).to_string(), "12.50");
/// ```
pub fn parse_amount(s: &str, rules: AmountRules) -> Result<Nanos, AmountError> {
    let t = s.trim();
    if t.is_empty() || t != s || t.len() > 40 {
        return Err(AmountError::NotADecimal);
    }
    let body = t.strip_prefix('-').unwrap_or(t);
    let mut parts = body.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    let digits_ok = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits_ok(int) || frac.is_some_and(|f| !digits_ok(f)) {
        return Err(AmountError::NotADecimal);
    }
    if frac.is_some_and(|f| f.len() > 9) {
        return Err(AmountError::TooPrecise);
    }
    let d = Decimal::from_str(t).map_err(|_| AmountError::NotADecimal)?;
    if rules.positive && d <= Decimal::ZERO {
        return Err(AmountError::NotPositive);
    }
    if let Some(max) = rules.max_usd {
        if d > Decimal::from(max) {
            return Err(AmountError::TooLarge);
        }
    }
    let n = (d * Decimal::from(NANOS_PER_USD))
        .to_i64()
        .ok_or(AmountError::TooLarge)?;
    Ok(Nanos(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_keeps_two_decimals_and_exact_tail() {
        assert_eq!(Nanos(12_500_000_000).to_string(), "12.50");
        assert_eq!(Nanos(150_000).to_string(), "0.00015");
        assert_eq!(Nanos(0).to_string(), "0.00");
        assert_eq!(Nanos(-1).to_string(), "-0.000000001");
        assert_eq!(
            Nanos(1_000_000_000_000_000_000).to_string(),
            "1000000000.00"
        );
    }

    #[test]
    fn deposits_parse_exactly_or_not_at_all() {
        let p = |s| parse_amount(s, AmountRules::DEPOSIT);
        assert_eq!(p("0.001"), Ok(Nanos(1_000_000)));
        assert_eq!(p("1000000000"), Ok(Nanos(MAX_DEPOSIT_USD * NANOS_PER_USD)));
        assert_eq!(p("0.000000001"), Ok(Nanos(1)));
        assert_eq!(p("1000000000.000000001"), Err(AmountError::TooLarge));
        assert_eq!(p("0.0000000001"), Err(AmountError::TooPrecise));
        assert_eq!(p("0"), Err(AmountError::NotPositive));
        assert_eq!(p("-1"), Err(AmountError::NotPositive));
        for bad in [
            "", " 1", "1e3", "1.", ".5", "+1", "0x10", "1,5", "NaN", "1 ",
        ] {
            assert_eq!(p(bad), Err(AmountError::NotADecimal), "{bad:?}");
        }
    }

    #[test]
    fn wide_totals_print_like_nanos_and_exactly() {
        for n in [0, 1, -1, 150_000, 12_500_000_000, i64::MAX, i64::MIN] {
            assert_eq!(WideNanos(n.into()).to_string(), Nanos(n).to_string());
        }
        let big = WideNanos(i128::from(i64::MAX) * 3 + 7);
        assert_eq!(big.to_string(), "27670116110.564327428");
    }

    #[test]
    fn credits_fit_each_part_and_the_sum() {
        let max = Nanos(i64::MAX);
        assert_eq!(credit_fits(max, Nanos::ZERO, 0, 0), Ok(()));
        assert_eq!(credit_fits(max, Nanos::ZERO, 1, 0), Err(OutOfRange));
        assert_eq!(credit_fits(Nanos(i64::MAX - 5), Nanos(5), 0, 0), Ok(()));
        assert_eq!(
            credit_fits(Nanos(i64::MAX - 5), Nanos(5), 0, 1),
            Err(OutOfRange)
        );
        assert_eq!(credit_fits(Nanos(-5), max, 0, 0), Ok(()));
        assert_eq!(
            credit_fits(Nanos(i64::MIN), Nanos::ZERO, -1, 0),
            Err(OutOfRange)
        );
    }

    #[test]
    fn costs_round_up_once_to_a_nano() {
        assert_eq!(to_nanos_ceil(Decimal::new(1, 12)), Nanos(1));
        assert_eq!(to_nanos_ceil(Decimal::new(1_000, 12)), Nanos(1));
        assert_eq!(to_nanos_ceil(Decimal::new(1_001, 12)), Nanos(2));
        assert_eq!(to_nanos_ceil(Decimal::ZERO), Nanos(0));
    }
}
