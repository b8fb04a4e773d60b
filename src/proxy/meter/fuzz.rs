//! Fuzz entries for the meter (M2, M3, M11): arbitrary bytes, split at
//! arbitrary points, through the SSE meter and the usage reader, with the
//! invariants asserted. A cargo-fuzz target is
//! `fuzz_target!(|d: &[u8]| fuzz_entry(d))` (`fuzz/fuzz_targets/`).

use bytes::Bytes;
use serde_json::Value;

use super::sse::SseMeter;
use super::usage::{clamp, read_usage, read_usage_bytes, resolve, Bounds, RawUsage};

/// Chunk lengths from a seed: 0 to 31 bytes each (0: an empty push).
fn cuts(seed: u64, len: usize) -> Vec<usize> {
    let mut x = seed | 1;
    let (mut at, mut out) = (0, Vec::new());
    while at < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = usize::try_from(x % 32).unwrap_or(1);
        out.push(n);
        at += n;
    }
    out
}

/// Feed `stream` in pieces of `lens` (then the rest), then finish.
fn run(hide: bool, stream: &[u8], lens: &[usize]) -> (Vec<u8>, SseMeter) {
    let mut m = SseMeter::new(hide);
    let (mut out, mut at) = (Vec::new(), 0);
    for &n in lens {
        let end = (at + n).min(stream.len());
        let piece = stream.get(at..end).unwrap_or_default();
        out.extend_from_slice(&m.push(Bytes::copy_from_slice(piece)));
        assert!(m.pending_len() <= end, "holds no more than it was given");
        at = end;
    }
    out.extend_from_slice(&m.push(Bytes::copy_from_slice(stream.get(at..).unwrap_or_default())));
    out.extend_from_slice(&m.finish());
    assert_eq!(m.pending_len(), 0);
    (out, m)
}

fn facts(m: &SseMeter) -> impl PartialEq + std::fmt::Debug {
    (m.usage(), m.text_bytes(), m.done(), m.error())
}

/// Never panics; asserts: without hiding the output is the input; any
/// chunking gives the same output and readings as one push; the usage
/// reader agrees with itself over `Value`, and resolve/clamp stay in
/// bounds.
pub fn fuzz_entry(data: &[u8]) {
    let (seed, stream) = match data {
        [a, b, rest @ ..] => (u64::from(*a) << 8 | u64::from(*b), rest),
        _ => (0, data),
    };
    let lens = cuts(seed, stream.len());
    for hide in [false, true] {
        let (whole, mw) = run(hide, stream, &[]);
        let (split, ms) = run(hide, stream, &lens);
        assert_eq!(whole, split, "output independent of chunking");
        assert_eq!(facts(&mw), facts(&ms), "readings independent of chunking");
        if hide {
            assert!(split.len() <= stream.len());
        } else {
            assert_eq!(split, stream, "bytes forwarded unchanged");
        }
    }
    usage_checks(stream, seed);
}

/// Fuzz entry for the usage reader alone (M2, M3): the first two bytes seed
/// the bounds and the prompt estimate, the rest is a `usage` value. Beyond
/// `usage_checks`, the reader is compared with a plain reading of the rules
/// over `serde_json::Value` (`reference_usage`), so a count read wrong, not
/// only a panic, is a finding.
pub fn fuzz_usage(data: &[u8]) {
    let (seed, body) = match data {
        [a, b, rest @ ..] => (u64::from(*a) << 8 | u64::from(*b), rest),
        _ => (0, data),
    };
    usage_checks(body, seed);
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        assert_eq!(read_usage(&v), reference_usage(&v), "reader follows M2");
    }
}

/// The usage reader agrees with itself over bytes and over `Value`, and
/// resolve/clamp keep their promises for bounds drawn from `seed` (some of
/// them the extremes: 0 and `u64::MAX`).
fn usage_checks(body: &[u8], seed: u64) {
    let raw = read_usage_bytes(body);
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        assert_eq!(read_usage(&v), raw, "one reader, two inputs");
    }
    let Some(raw) = raw else { return };
    assert!(raw.has_any(), "a reading has a usable count");
    let estimate = match seed % 3 {
        0 => u64::MAX,
        1 => 0,
        _ => seed,
    };
    for generates in [false, true] {
        let u = resolve(raw, generates, estimate);
        assert!(u.cached_tokens <= u.input_tokens);
        if let (Some(p), Some(c)) = (raw.prompt, raw.completion) {
            assert_eq!(
                (u.input_tokens, u.output_tokens),
                (p, c),
                "both counts bill"
            );
        } else if let (None, None, Some(t)) = (raw.prompt, raw.completion, raw.total) {
            assert_eq!(u.input_tokens + u.output_tokens, t, "a total is conserved");
            if !generates {
                assert_eq!(u.output_tokens, 0, "embeddings never output");
            }
        }
        let _ = u.total_tokens();
        for b in [
            Bounds {
                max_input: seed.wrapping_mul(7919),
                max_output: seed,
            },
            Bounds {
                max_input: u64::MAX,
                max_output: u64::MAX,
            },
            Bounds {
                max_input: 0,
                max_output: 0,
            },
        ] {
            let (c, lowered) = clamp(u, b);
            assert!(c.output_tokens <= b.max_output && c.input_tokens <= b.max_input);
            assert!(c.cached_tokens <= c.input_tokens);
            assert!(c.input_tokens <= u.input_tokens && c.output_tokens <= u.output_tokens);
            assert_eq!(lowered, c != u, "the flag says whether a count fell");
            assert_eq!(clamp(c, b), (c, false), "clamp is idempotent");
        }
    }
}

/// M2 read plainly over a `Value`: the oracle of `fuzz_usage`.
fn reference_usage(v: &Value) -> Option<RawUsage> {
    fn count(v: Option<&Value>) -> Option<u64> {
        let n = v?.as_number()?;
        if let Some(u) = n.as_u64() {
            Some(u)
        } else if n.as_i64().is_some() {
            Some(0)
        } else {
            let x = n.as_f64()?;
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let whole = x as u64; // saturating: past u64 is u64::MAX (M3)
            if x < 0.0 {
                Some(0)
            } else if x.fract() == 0.0 {
                Some(whole)
            } else {
                None
            }
        }
    }
    fn cached(v: Option<&Value>) -> Option<u64> {
        count(v?.as_object()?.get("cached_tokens"))
    }
    let m = v.as_object()?;
    let raw = RawUsage {
        prompt: count(m.get("prompt_tokens")).or(count(m.get("input_tokens"))),
        completion: count(m.get("completion_tokens")).or(count(m.get("output_tokens"))),
        total: count(m.get("total_tokens")),
        cached: cached(m.get("prompt_tokens_details")).or(cached(m.get("input_tokens_details"))),
    };
    raw.has_any().then_some(raw)
}
