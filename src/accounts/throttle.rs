//! S1: failed logins throttled per email and per client address, before
//! any password check runs (a throttled attempt costs no Argon2 and no
//! store read).
//!
//! Fixed windows: `EMAIL_FAILURES` failed logins for one email, or
//! `ADDRESS_FAILURES` from one client address (an IPv6 client by its
//! /64, which one host usually holds whole), within `WINDOW`, and further
//! attempts are refused until the window that began with the first
//! failure ends (429 `rate_limited`, `retry-after` in seconds). A right
//! password clears its email's count, not its address's.
//!
//! Memory stays bounded under an attack with random emails or addresses:
//! each table keeps at most `MAX_ENTRIES` keys, stored as 64-bit keyed
//! hashes (an email's length costs nothing); when one is full, expired
//! entries go first, then the oldest window. The time is the app's clock,
//! so tests move it by hand.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// Failed logins allowed per email, and per client address, per window.
pub const EMAIL_FAILURES: u32 = 5;
pub const ADDRESS_FAILURES: u32 = 30;
/// The window, in seconds.
pub const WINDOW_S: i64 = 15 * 60;
/// Keys each table holds at most (about 2.5 MB each when full).
pub const MAX_ENTRIES: usize = 65_536;

/// The two tables.
pub struct LoginThrottle {
    emails: Table,
    addresses: Table,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle {
            emails: Table::new(EMAIL_FAILURES, MAX_ENTRIES),
            addresses: Table::new(ADDRESS_FAILURES, MAX_ENTRIES),
        }
    }
}

impl LoginThrottle {
    /// `Err(seconds to wait)` if `email` (normalized) or `addr` has used
    /// up its failures in the current window.
    pub fn check(&self, email: &str, addr: Option<IpAddr>, now: DateTime<Utc>) -> Result<(), u64> {
        let now = now.timestamp_millis();
        let by_email = self.emails.blocked(&Key::Email(email), now);
        let by_addr = addr.and_then(|a| self.addresses.blocked(&Key::addr(a), now));
        match by_email.max(by_addr) {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// Count a failed login against both.
    pub fn failed(&self, email: &str, addr: Option<IpAddr>, now: DateTime<Utc>) {
        let now = now.timestamp_millis();
        self.emails.count(&Key::Email(email), now);
        if let Some(a) = addr {
            self.addresses.count(&Key::addr(a), now);
        }
    }

    /// A right password: the email's count starts over.
    pub fn succeeded(&self, email: &str) {
        self.emails.clear(&Key::Email(email));
    }

    /// Keys held (tests: the bound).
    pub fn len(&self) -> (usize, usize) {
        (self.emails.len(), self.addresses.len())
    }
}

#[derive(Hash)]
enum Key<'a> {
    Email(&'a str),
    V4([u8; 4]),
    /// The /64 prefix.
    V6([u8; 8]),
}

impl Key<'_> {
    fn addr(a: IpAddr) -> Key<'static> {
        match a {
            IpAddr::V4(v4) => Key::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Key::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&o[..8]);
                    Key::V6(prefix)
                }
            },
        }
    }
}

struct Entry {
    failures: u32,
    /// When the window began (its first failure), in ms since the epoch.
    since_ms: i64,
}

struct Table {
    limit: u32,
    cap: usize,
    /// Keyed per process, so nobody can aim collisions at an email.
    hasher: RandomState,
    map: Mutex<HashMap<u64, Entry>>,
}

const WINDOW_MS: i64 = WINDOW_S * 1000;

impl Table {
    fn new(limit: u32, cap: usize) -> Table {
        Table {
            limit,
            cap,
            hasher: RandomState::new(),
            map: Mutex::new(HashMap::new()),
        }
    }

    fn hash(&self, key: &Key<'_>) -> u64 {
        self.hasher.hash_one(key)
    }

    fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Seconds left in a window whose failures are used up.
    fn blocked(&self, key: &Key<'_>, now: i64) -> Option<u64> {
        let h = self.hash(key);
        let map = self.map.lock().ok()?;
        let e = map.get(&h)?;
        let ends = e.since_ms + WINDOW_MS;
        if e.failures >= self.limit && now < ends {
            let ms = u64::try_from(ends - now).unwrap_or(0);
            Some(ms.div_ceil(1000).max(1))
        } else {
            None
        }
    }

    fn count(&self, key: &Key<'_>, now: i64) {
        let h = self.hash(key);
        let Ok(mut map) = self.map.lock() else {
            return;
        };
        if let Some(e) = map.get_mut(&h) {
            if now >= e.since_ms + WINDOW_MS {
                *e = Entry {
                    failures: 1,
                    since_ms: now,
                };
            } else {
                e.failures = e.failures.saturating_add(1);
            }
            return;
        }
        if map.len() >= self.cap {
            map.retain(|_, e| now < e.since_ms + WINDOW_MS);
        }
        if map.len() >= self.cap {
            let oldest = map.iter().min_by_key(|(_, e)| e.since_ms).map(|(k, _)| *k);
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        map.insert(
            h,
            Entry {
                failures: 1,
                since_ms: now,
            },
        );
    }

    fn clear(&self, key: &Key<'_>) {
        let h = self.hash(key);
        if let Ok(mut map) = self.map.lock() {
            map.remove(&h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap_or_default()
    }

    #[test]
    fn an_email_is_refused_after_its_failures_until_its_window_ends() {
        let t = LoginThrottle::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        for _ in 0..EMAIL_FAILURES {
            assert_eq!(t.check("v@x", Some(a), at(0)), Ok(()));
            t.failed("v@x", Some(a), at(0));
        }
        assert_eq!(t.check("v@x", None, at(10)), Err(WINDOW_S as u64 - 10));
        assert_eq!(t.check("other@x", None, at(10)), Ok(()));
        assert_eq!(t.check("v@x", None, at(WINDOW_S)), Ok(()));
        t.failed("v@x", None, at(WINDOW_S));
        assert_eq!(t.check("v@x", None, at(WINDOW_S)), Ok(()), "a new window");
        t.succeeded("v@x");
        assert_eq!(t.len().0, 0);
    }

    #[test]
    fn an_address_is_refused_across_emails_and_ipv6_counts_by_its_64() {
        let t = LoginThrottle::default();
        let a: IpAddr = "2001:db8::1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let same64: IpAddr = "2001:db8::ffff:2"
            .parse()
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let other: IpAddr = "2001:db8:0:1::1"
            .parse()
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        for i in 0..ADDRESS_FAILURES {
            t.failed(&format!("u{i}@x"), Some(a), at(0));
        }
        assert!(t.check("fresh@x", Some(same64), at(1)).is_err());
        assert_eq!(t.check("fresh@x", Some(other), at(1)), Ok(()));
    }

    #[test]
    fn a_table_never_holds_more_than_its_bound() {
        let t = Table::new(3, 100);
        for i in 0..1000i64 {
            t.count(&Key::Email(&format!("r{i}@x")), i);
        }
        assert_eq!(t.len(), 100);
        // The newest are kept.
        assert!(t
            .map
            .lock()
            .map(|m| m.contains_key(&t.hash(&Key::Email("r999@x"))))
            .unwrap_or(false));
    }
}
