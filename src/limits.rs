//! Limits on the hot path (Q1-Q3): what a cached key carries of its limits
//! (`KeyLimits`, read on every request without messaging anyone), the
//! per-key rate counters (`RateLimiter`, Q2: atomics, no allocation), and
//! the spend rules handed to the wallet actor with each hold (`Charge`,
//! Q1: the actor checks and reserves them in the same step as the hold,
//! wallet/limits.rs). The stored records are `store::LimitsRecord`.
//!
//! Rate windows are fixed UTC minutes of the gateway's clock: a key may
//! make `rpm` requests and spend `tpm` tokens (input + output, counted at
//! settlement) per clock minute. A fixed window admits at most twice the
//! rate across a minute boundary; it needs one atomic word per counter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use chrono::{DateTime, Utc};

use crate::money::Nanos;
use crate::store::{LimitsRecord, Period};

/// A spend limit in force: at most `amount` nano-dollars per `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpendRule {
    pub amount: Nanos,
    pub period: Period,
}

impl SpendRule {
    /// The rule a stored record sets, if any (a limit with no stored
    /// period is monthly, as the API sets it).
    pub fn of(rec: Option<&LimitsRecord>) -> Option<SpendRule> {
        let rec = rec?;
        Some(SpendRule {
            amount: rec.spend_limit?,
            period: rec.period.unwrap_or(Period::Month),
        })
    }
}

/// What one hold is charged to (Q1): the key and its member, with the
/// spend rules of each. Cloning it only bumps reference counts.
#[derive(Clone, Debug)]
pub struct Charge {
    pub key_id: Arc<str>,
    pub member_id: Arc<str>,
    pub key_rule: Option<SpendRule>,
    /// Team keys only: the assigned member's limit.
    pub member_rule: Option<SpendRule>,
}

/// A key's limits as the key cache holds them; rebuilt when the key's or
/// its member's limits change (the key is invalidated, on every instance).
#[derive(Debug, Default)]
pub struct KeyLimits {
    pub key_rule: Option<SpendRule>,
    pub member_rule: Option<SpendRule>,
    pub rate: Option<RateLimiter>,
}

impl KeyLimits {
    pub fn new(key: Option<&LimitsRecord>, member: Option<&LimitsRecord>) -> KeyLimits {
        let rpm = key.and_then(|r| r.rpm);
        let tpm = key.and_then(|r| r.tpm);
        KeyLimits {
            key_rule: SpendRule::of(key),
            member_rule: SpendRule::of(member),
            rate: (rpm.is_some() || tpm.is_some()).then(|| RateLimiter::new(rpm, tpm)),
        }
    }
}

const MINUTE_MS: i64 = 60_000;
/// Low bits of a counter word: the count; high bits: the window.
const COUNT_BITS: u32 = 38;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

fn window_of(now_ms: i64) -> u64 {
    // Minutes since the epoch, kept modulo 2^26 (127 years): only compared.
    ((now_ms.div_euclid(MINUTE_MS) as u64) & ((1 << (64 - COUNT_BITS)) - 1)) << COUNT_BITS
}

/// A key's rpm / tpm counters for the current clock minute (Q2).
#[derive(Debug)]
pub struct RateLimiter {
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    /// Window (high bits) and requests admitted in it (low bits).
    requests: AtomicU64,
    /// Window (high bits) and tokens settled in it (low bits, saturating).
    tokens: AtomicU64,
}

/// Where a key stands against its rate limits after a request was
/// admitted or refused: what the `x-ratelimit-*` headers say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateState {
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub requests: u64,
    pub tokens: u64,
    /// Milliseconds until the window resets (both counters share it).
    pub reset_ms: u64,
}

impl RateLimiter {
    pub fn new(rpm: Option<u32>, tpm: Option<u32>) -> RateLimiter {
        RateLimiter {
            rpm,
            tpm,
            requests: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
        }
    }

    fn count(word: u64, window: u64) -> u64 {
        if word & !COUNT_MASK == window {
            word & COUNT_MASK
        } else {
            0
        }
    }

    /// Q2: count one request in the minute of `now`, unless the minute's
    /// requests or settled tokens are already at the limit. Returns the
    /// state after it and whether it was admitted.
    pub fn admit(&self, now: DateTime<Utc>) -> (RateState, bool) {
        let now_ms = now.timestamp_millis();
        let window = window_of(now_ms);
        let tokens = Self::count(self.tokens.load(Ordering::Acquire), window);
        let tokens_full = self.tpm.is_some_and(|t| tokens >= u64::from(t));
        let mut admitted = false;
        let mut requests = 0;
        let _ = self
            .requests
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                let n = Self::count(word, window);
                requests = n;
                admitted = !tokens_full && self.rpm.is_none_or(|r| n < u64::from(r));
                admitted.then(|| {
                    requests = n + 1;
                    window | (n + 1).min(COUNT_MASK)
                })
            });
        let state = RateState {
            rpm: self.rpm,
            tpm: self.tpm,
            requests,
            tokens,
            reset_ms: (MINUTE_MS - now_ms.rem_euclid(MINUTE_MS)) as u64,
        };
        (state, admitted)
    }

    /// Q2: `tokens` (input + output, as settled) used in the minute of `now`.
    pub fn spend_tokens(&self, now: DateTime<Utc>, tokens: u64) {
        if self.tpm.is_none() || tokens == 0 {
            return;
        }
        let window = window_of(now.timestamp_millis());
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                let n = Self::count(word, window);
                Some(window | n.saturating_add(tokens).min(COUNT_MASK))
            });
    }
}

const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
const REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");

impl RateState {
    /// Whole seconds until the window resets, at least 1 (`retry-after`).
    pub fn retry_after_s(&self) -> u64 {
        self.reset_ms.div_ceil(1000).max(1)
    }

    /// OpenAI's rate-limit headers: the requests triple when `rpm` is set,
    /// the tokens triple when `tpm` is set. Names are constants; values are
    /// formatted on the stack (the header map copies each once).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        // Room for all six at once: one growth of the map, not two.
        headers.reserve(6);
        let mut buf = [0u8; 16];
        let reset = HeaderValue::from_bytes(openai_duration_into(self.reset_ms, &mut buf)).ok();
        let mut put = |limit: Option<u32>, used: u64, names: [HeaderName; 3]| {
            let Some(limit) = limit else { return };
            let [limit_name, remaining_name, reset_name] = names;
            let remaining = u64::from(limit).saturating_sub(used);
            headers.insert(limit_name, HeaderValue::from(limit));
            headers.insert(remaining_name, HeaderValue::from(remaining));
            if let Some(r) = &reset {
                headers.insert(reset_name, r.clone());
            }
        };
        put(
            self.rpm,
            self.requests,
            [LIMIT_REQUESTS, REMAINING_REQUESTS, RESET_REQUESTS],
        );
        put(
            self.tpm,
            self.tokens,
            [LIMIT_TOKENS, REMAINING_TOKENS, RESET_TOKENS],
        );
    }
}

/// A duration as OpenAI's reset headers write it: `120ms`, `1s`, `59s`,
/// `1m0s` (seconds rounded up).
pub fn openai_duration(ms: u64) -> String {
    let mut buf = [0u8; 16];
    String::from_utf8_lossy(openai_duration_into(ms, &mut buf)).into_owned()
}

/// `openai_duration` written into `buf` (a reset is under an hour: at most
/// `59m59s`, or `999ms`), without allocating.
fn openai_duration_into(ms: u64, buf: &mut [u8; 16]) -> &[u8] {
    let mut n = 0;
    let mut push = |s: &[u8], buf: &mut [u8; 16]| {
        let end = (n + s.len()).min(buf.len());
        buf[n..end].copy_from_slice(&s[..end - n]);
        n = end;
    };
    let mut num = itoa::Buffer::new();
    if ms < 1000 {
        push(num.format(ms).as_bytes(), buf);
        push(b"ms", buf);
    } else {
        let s = ms.div_ceil(1000);
        if s >= 60 {
            push(num.format(s / 60).as_bytes(), buf);
            push(b"m", buf);
        }
        push(num.format(s % 60).as_bytes(), buf);
        push(b"s", buf);
    }
    &buf[..n]
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(min: u32, sec: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 12, min, sec).unwrap()
    }

    #[test]
    fn rpm_counts_per_clock_minute() {
        let r = RateLimiter::new(Some(2), None);
        assert!(r.admit(at(0, 1)).1);
        let (s, ok) = r.admit(at(0, 2));
        assert!(ok);
        assert_eq!((s.requests, s.reset_ms), (2, 58_000));
        let (s, ok) = r.admit(at(0, 59));
        assert!(!ok);
        assert_eq!(s.retry_after_s(), 1);
        assert!(r.admit(at(1, 0)).1);
    }

    #[test]
    fn tpm_refuses_once_the_minute_is_spent() {
        let r = RateLimiter::new(None, Some(100));
        assert!(r.admit(at(5, 0)).1);
        r.spend_tokens(at(5, 1), 60);
        assert!(r.admit(at(5, 2)).1);
        r.spend_tokens(at(5, 3), 40);
        let (s, ok) = r.admit(at(5, 4));
        assert!(!ok);
        assert_eq!(s.tokens, 100);
        assert!(r.admit(at(6, 0)).1);
    }

    #[test]
    fn reset_reads_like_openai() {
        assert_eq!(openai_duration(120), "120ms");
        assert_eq!(openai_duration(1000), "1s");
        assert_eq!(openai_duration(59_001), "1m0s");
        assert_eq!(openai_duration(360_000), "6m0s");
    }
}
