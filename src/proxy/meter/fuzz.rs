//! Fuzz entry for the meter (M2, M11): arbitrary bytes, split at arbitrary
//! points, through the SSE meter and the usage reader, with the invariants
//! asserted. A cargo-fuzz target is `fuzz_target!(|d: &[u8]| fuzz_entry(d))`.

use bytes::Bytes;

use super::sse::SseMeter;
use super::usage::{clamp, read_usage, read_usage_bytes, resolve, Bounds};

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
    let raw = read_usage_bytes(stream);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(stream) {
        assert_eq!(read_usage(&v), raw, "one reader, two inputs");
    }
    if let Some(raw) = raw {
        let b = Bounds {
            max_input: seed.wrapping_mul(7919),
            max_output: seed,
        };
        let u = resolve(raw, seed % 2 == 0, seed);
        assert!(u.cached_tokens <= u.input_tokens);
        let (c, _) = clamp(u, b);
        assert!(c.output_tokens <= b.max_output && c.input_tokens <= b.max_input);
        assert!(c.cached_tokens <= c.input_tokens);
        assert_eq!(clamp(c, b), (c, false), "clamp is idempotent");
    }
}
