//! Usage reports (U1-U3): 30-day statistics per key, per member, per team
//! and per user, from the day buckets the store keeps. The buckets are
//! written by the same atomic `apply` as the debits they belong to, so
//! usage spend always equals the ledger's settlements.
//!
//! Pure: `Window` takes `today` as an argument and the aggregation takes
//! rows; nothing here reads a clock or a store.

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate};
use serde::Serialize;

use crate::money::Nanos;
use crate::store::{DayUsage, UsageRow};

/// Reports reach back at most this many days; older buckets are pruned.
pub const MAX_DAYS: u32 = 90;
pub const DEFAULT_DAYS: u32 = 30;

/// The last `days` UTC days, today included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub first: NaiveDate,
    pub last: NaiveDate,
}

impl Window {
    /// `None` unless 1 <= days <= 90.
    pub fn last_days(today: NaiveDate, days: u32) -> Option<Window> {
        if !(1..=MAX_DAYS).contains(&days) {
            return None;
        }
        Some(Window {
            first: today - Duration::days(i64::from(days) - 1),
            last: today,
        })
    }

    pub fn contains(&self, d: NaiveDate) -> bool {
        self.first <= d && d <= self.last
    }

    fn dates(self) -> impl Iterator<Item = NaiveDate> {
        let last = self.last;
        self.first.iter_days().take_while(move |d| *d <= last)
    }
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DayPoint {
    pub date: NaiveDate,
    pub calls: u64,
    pub total_tokens: u64,
    pub spend: Nanos,
}

/// The stats object of API.md.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Stats {
    pub calls: u64,
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub spend: Nanos,
    /// Every day of the window, oldest first, zeros included.
    pub days: Vec<DayPoint>,
}

/// Sum the rows that fall in `window`, with a full daily series.
pub fn stats<'a>(window: Window, rows: impl IntoIterator<Item = &'a UsageRow>) -> Stats {
    let mut by_day: BTreeMap<NaiveDate, DayUsage> = BTreeMap::new();
    for r in rows {
        if window.contains(r.date) {
            by_day.entry(r.date).or_default().merge(&r.usage);
        }
    }
    let mut total = DayUsage::default();
    for u in by_day.values() {
        total.merge(u);
    }
    Stats {
        calls: total.calls,
        input_tokens: total.input_tokens,
        cached_tokens: total.cached_tokens,
        output_tokens: total.output_tokens,
        total_tokens: total.input_tokens + total.output_tokens,
        spend: total.spend,
        days: window
            .dates()
            .map(|date| {
                let u = by_day.get(&date).copied().unwrap_or_default();
                DayPoint {
                    date,
                    calls: u.calls,
                    total_tokens: u.input_tokens + u.output_tokens,
                    spend: u.spend,
                }
            })
            .collect(),
    }
}

/// Rows grouped by a field (key or member), each group's stats.
pub fn grouped<'a>(
    window: Window,
    rows: &'a [UsageRow],
    field: impl Fn(&'a UsageRow) -> &'a str,
) -> BTreeMap<&'a str, Stats> {
    let mut groups: BTreeMap<&str, Vec<&UsageRow>> = BTreeMap::new();
    for r in rows {
        groups.entry(field(r)).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|(k, rs)| (k, stats(window, rs)))
        .collect()
}

/// Raw rows as CSV, for spreadsheets: one line per day, key and member.
pub fn csv<'a>(window: Window, rows: impl IntoIterator<Item = &'a UsageRow>) -> String {
    let mut out = String::from(
        "date,wallet_id,key_id,member_id,calls,input_tokens,cached_tokens,output_tokens,total_tokens,spend\n",
    );
    for r in rows.into_iter().filter(|r| window.contains(r.date)) {
        let u = &r.usage;
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}\n",
            r.date,
            r.wallet_id,
            r.key_id,
            r.member_id,
            u.calls,
            u.input_tokens,
            u.cached_tokens,
            u.output_tokens,
            u.input_tokens + u.output_tokens,
            u.spend
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn row(date: &str, key: &str, calls: u64, spend: i64) -> UsageRow {
        UsageRow {
            wallet_id: "w".into(),
            key_id: key.into(),
            member_id: "m".into(),
            date: d(date),
            usage: DayUsage {
                calls,
                input_tokens: 10 * calls,
                cached_tokens: calls,
                output_tokens: 5 * calls,
                spend: Nanos(spend),
            },
        }
    }

    #[test]
    fn windows_are_1_to_90_days_ending_today() {
        let today = d("2026-03-01");
        assert_eq!(Window::last_days(today, 0), None);
        assert_eq!(Window::last_days(today, 91), None);
        let w = Window::last_days(today, 30).unwrap();
        assert_eq!(w.first, d("2026-01-31"));
        assert_eq!(w.dates().count(), 30);
    }

    #[test]
    fn stats_sum_inside_the_window_only() {
        let w = Window::last_days(d("2026-03-01"), 2).unwrap();
        let rows = [
            row("2026-02-27", "a", 100, 100),
            row("2026-02-28", "a", 1, 7),
            row("2026-03-01", "b", 2, 9),
        ];
        let s = stats(w, &rows);
        assert_eq!((s.calls, s.spend, s.total_tokens), (3, Nanos(16), 45));
        assert_eq!(s.days.len(), 2);
        assert_eq!(s.days[0].spend, Nanos(7));
        let g = grouped(w, &rows, |r| r.key_id.as_str());
        assert_eq!(g["a"].calls, 1);
        assert_eq!(g["b"].calls, 2);
        let c = csv(w, &rows);
        assert_eq!(c.lines().count(), 3);
        assert!(c.contains("2026-03-01,w,b,m,2,20,2,10,30,0.000000009"));
    }
}
