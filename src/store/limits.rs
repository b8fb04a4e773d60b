//! Limits records (Q1-Q3): a spend limit with its period, and the rate
//! limits of a key, stored per subject (a key, or a member of a team).
//! Kept apart from the other records so the limits feature is one file per
//! store (`memory/limits.rs`, `redis_store/limits.rs`) plus this one.

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::StoreResult;
use crate::money::Nanos;

/// What a limits record is about: a key (personal or team), or a member
/// of a team (their limit covers every team key assigned to them, Q1).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LimitSubject {
    Key(String),
    Member { team_id: String, user_id: String },
}

impl LimitSubject {
    /// The subject's id in the store: `key:ID` or `member:TEAM:USER`.
    pub fn store_id(&self) -> String {
        match self {
            LimitSubject::Key(id) => format!("key:{id}"),
            LimitSubject::Member { team_id, user_id } => format!("member:{team_id}:{user_id}"),
        }
    }
}

/// A spend limit's period (Q1), in UTC: a day from midnight, a week from
/// Monday midnight, a calendar month from the 1st, or `total` (never
/// resets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Week,
    Month,
    Total,
}

impl Period {
    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "day" => Some(Period::Day),
            "week" => Some(Period::Week),
            "month" => Some(Period::Month),
            "total" => Some(Period::Total),
            _ => None,
        }
    }

    /// The first UTC day of the period containing `today`; `None` for
    /// `total` (every day counts).
    pub fn first_day(self, today: NaiveDate) -> Option<NaiveDate> {
        match self {
            Period::Day => Some(today),
            Period::Week => {
                Some(today - Duration::days(i64::from(today.weekday().num_days_from_monday())))
            }
            Period::Month => today.with_day(1),
            Period::Total => None,
        }
    }

    /// When the period containing `now` ends (the next one starts):
    /// midnight UTC; `None` for `total`.
    pub fn resets_at(self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let today = now.date_naive();
        let next = match self {
            Period::Day => today.succ_opt()?,
            Period::Week => self.first_day(today)? + Duration::days(7),
            Period::Month => {
                let (y, m) = if today.month() == 12 {
                    (today.year() + 1, 1)
                } else {
                    (today.year(), today.month() + 1)
                };
                NaiveDate::from_ymd_opt(y, m, 1)?
            }
            Period::Total => return None,
        };
        Some(Utc.from_utc_datetime(&next.and_hms_opt(0, 0, 0)?))
    }
}

/// The stored limits of one subject. `None` everywhere: no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsRecord {
    /// Spend per `period`, in nano-dollars, above zero.
    pub spend_limit: Option<Nanos>,
    pub period: Option<Period>,
    /// Requests per minute, 1..=10^9 (keys only).
    pub rpm: Option<u32>,
    /// Tokens (input + output, as settled) per minute, 1..=10^9 (keys only).
    pub tpm: Option<u32>,
}

impl LimitsRecord {
    pub fn is_empty(&self) -> bool {
        *self == LimitsRecord::default()
    }
}

/// Limits records (Q1-Q3); read on key-cache misses and by the API.
#[async_trait]
pub trait LimitStore: Send + Sync {
    /// Replace the subject's record (an empty record may be deleted).
    async fn put_limits(&self, subject: &LimitSubject, rec: &LimitsRecord) -> StoreResult<()>;
    /// The subject's record; `None` if it never had one (or it was cleared).
    async fn limits(&self, subject: &LimitSubject) -> StoreResult<Option<LimitsRecord>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn periods_start_and_end_at_utc_midnight() {
        // 2026-11-30 is a Monday.
        let mon = d(2026, 11, 30);
        assert_eq!(Period::Week.first_day(mon), Some(mon));
        assert_eq!(Period::Week.first_day(d(2026, 12, 6)), Some(mon));
        assert_eq!(Period::Week.first_day(d(2026, 12, 7)), Some(d(2026, 12, 7)));
        assert_eq!(
            Period::Month.first_day(d(2026, 12, 31)),
            Some(d(2026, 12, 1))
        );
        assert_eq!(Period::Total.first_day(mon), None);
        let late = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
        let new_year = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(Period::Day.resets_at(late), Some(new_year));
        assert_eq!(Period::Month.resets_at(late), Some(new_year));
        assert_eq!(
            Period::Week.resets_at(late),
            Some(Utc.with_ymd_and_hms(2027, 1, 4, 0, 0, 0).unwrap())
        );
        assert_eq!(Period::Total.resets_at(late), None);
    }
}
