//! Fuzz entry of the JSON meter (M8): arbitrary bytes, arbitrary chunking.
//! Asserts what must hold for any input: no panic, bounded state, the same
//! facts whatever the chunking, and agreement with serde_json on what is a
//! well-formed object and on the top-level members it reports.

use serde_json::Value;

use super::{JsonFacts, JsonMeter, MAX_USAGE_BYTES};

/// Run `body` through a meter in chunks of the given sizes (cycled; a 0 is
/// an empty push), checking the heap bound after every push.
fn meter_in_chunks(body: &[u8], sizes: &mut dyn FnMut() -> usize) -> JsonFacts {
    let mut meter = JsonMeter::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(sizes().min(rest.len()));
        meter.push(chunk);
        assert!(
            meter.heap_bytes() <= 2 * MAX_USAGE_BYTES,
            "state not bounded"
        );
        rest = tail;
    }
    meter.finish()
}

/// Fuzz target body: the first byte seeds the chunking, the rest is the
/// answer. Panics (by assertion) only when an invariant breaks.
#[doc(hidden)]
pub fn fuzz_entry(data: &[u8]) {
    let Some((&seed, body)) = data.split_first() else {
        return;
    };
    let whole = meter_in_chunks(body, &mut || usize::MAX);
    let mut x = u32::from(seed) | 0x100;
    let mut random = || {
        // xorshift32: sizes 0..=31 and now and then a long one.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        if x % 8 == 0 {
            (x % 4096) as usize
        } else {
            (x % 32) as usize
        }
    };
    assert_eq!(
        meter_in_chunks(body, &mut random),
        whole,
        "chunking changed facts"
    );
    assert_eq!(
        meter_in_chunks(body, &mut || 1),
        whole,
        "byte feed changed facts"
    );
    agrees_with_serde(body, &whole);
}

/// The meter and serde_json agree on `body`: well-formed exactly when serde
/// reads an object (save numbers out of f64 range, which serde refuses and
/// JSON's grammar allows), and then on `usage`, `choices` and `data`.
fn agrees_with_serde(body: &[u8], facts: &JsonFacts) {
    let map = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return assert!(!facts.well_formed, "not an object"),
        Err(e) => {
            let range = e.to_string().starts_with("number out of range");
            return assert!(!facts.well_formed || range, "serde refused: {e}");
        }
    };
    assert!(facts.well_formed, "serde read an object");
    let present = |k: &str| map.get(k).is_some_and(|v| !v.is_null());
    assert_eq!(facts.has_choices, present("choices"));
    assert_eq!(facts.has_data, present("data"));
    if body.len() <= MAX_USAGE_BYTES {
        let ours = facts.usage.as_deref().map(serde_json::from_slice::<Value>);
        match (ours, map.get("usage")) {
            (None, None) => {}
            (Some(Ok(ours)), Some(theirs)) => assert_eq!(&ours, theirs, "usage differs"),
            (ours, theirs) => panic!("usage: meter {ours:?}, serde {theirs:?}"),
        }
    }
}
