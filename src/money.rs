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
    fn costs_round_up_once_to_a_nano() {
        assert_eq!(to_nanos_ceil(Decimal::new(1, 12)), Nanos(1));
        assert_eq!(to_nanos_ceil(Decimal::new(1_000, 12)), Nanos(1));
        assert_eq!(to_nanos_ceil(Decimal::new(1_001, 12)), Nanos(2));
        assert_eq!(to_nanos_ceil(Decimal::ZERO), Nanos(0));
    }
}
