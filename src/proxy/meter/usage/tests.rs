//! Tests of the usage reader (M2) and its bounds (M3).

#![allow(clippy::indexing_slicing)] // Tests index fixed data freely.
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

fn raw(
    prompt: Option<u64>,
    completion: Option<u64>,
    total: Option<u64>,
    cached: Option<u64>,
) -> RawUsage {
    RawUsage {
        prompt,
        completion,
        total,
        cached,
    }
}

fn read(text: &str) -> Option<RawUsage> {
    let bytes = read_usage_bytes(text.as_bytes());
    let v: Value = serde_json::from_str(text).unwrap();
    assert_eq!(read_usage(&v), bytes, "bytes and Value agree on {text}");
    bytes
}

fn usage(input: u64, cached: u64, output: u64) -> Usage {
    Usage {
        input_tokens: input,
        cached_tokens: cached,
        output_tokens: output,
    }
}

#[test]
fn each_count_is_read_on_its_own() {
    let cases = [
        (
            r#"{"prompt_tokens":1219,"completion_tokens":10,"total_tokens":1229,
               "prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0}}"#,
            raw(Some(1219), Some(10), Some(1229), Some(1024)),
        ),
        (
            r#"{"prompt_tokens":null,"completion_tokens":5}"#,
            raw(None, Some(5), None, None),
        ),
        (
            r#"{"prompt_tokens":-3,"completion_tokens":-1.5}"#,
            raw(Some(0), Some(0), None, None),
        ),
        (
            r#"{"prompt_tokens":12.0,"completion_tokens":12.5,"total_tokens":"12"}"#,
            raw(Some(12), None, None, None),
        ),
        (
            r#"{"prompt_tokens":18446744073709551615,"completion_tokens":18446744073709551616}"#,
            raw(Some(u64::MAX), Some(u64::MAX), None, None),
        ),
        (
            r#"{"prompt_tokens":1e300,"completion_tokens":4294967295}"#,
            raw(Some(u64::MAX), Some(4_294_967_295), None, None),
        ),
        (
            r#"{"prompt_tokens":true,"completion_tokens":[1],"total_tokens":{"a":1},"x":7}"#,
            raw(None, None, None, None),
        ),
        (
            r#"{"prompt\u005ftokens":3}"#,
            raw(Some(3), None, None, None),
        ),
        (
            r#"{"prompt_tokens":3,"prompt_tokens":4}"#,
            raw(Some(4), None, None, None),
        ),
        (
            r#"{"prompt_tokens_details":{"cached_tokens":-2}}"#,
            raw(None, None, None, Some(0)),
        ),
        (
            r#"{"prompt_tokens_details":null,"total_tokens":9}"#,
            raw(None, None, Some(9), None),
        ),
    ];
    for (text, want) in cases {
        let want = want.has_any().then_some(want);
        assert_eq!(read(text), want, "{text}");
    }
}

#[test]
fn responses_and_anthropic_names_stand_in_for_absent_openai_names() {
    let r = read(
        r#"{"input_tokens":100,"output_tokens":20,"total_tokens":120,
            "input_tokens_details":{"cached_tokens":64}}"#,
    );
    assert_eq!(r, Some(raw(Some(100), Some(20), Some(120), Some(64))));
    let r = read(
        r#"{"prompt_tokens":7,"input_tokens":100,"completion_tokens":null,"output_tokens":2,
            "prompt_tokens_details":{"cached_tokens":5},"input_tokens_details":{"cached_tokens":64}}"#,
    );
    assert_eq!(r, Some(raw(Some(7), Some(2), None, Some(5))));
}

#[test]
fn a_usage_object_with_no_usable_count_is_absent() {
    for text in [
        "{}",
        "null",
        "7",
        r#""usage""#,
        "[1,2]",
        r#"{"prompt_tokens":null,"completion_tokens":"5","total_tokens":1.5}"#,
        r#"{"completion_tokens_details":{"reasoning_tokens":9}}"#,
    ] {
        assert_eq!(read(text), None, "{text}");
    }
    assert_eq!(read_usage_bytes(b"{\"prompt_tokens\":3"), None);
    assert_eq!(read_usage_bytes(b"{\"prompt_tokens\":3} x"), None);
}

#[test]
fn absent_counts_are_zero_when_another_is_present() {
    let u = resolve(read(r#"{"prompt_tokens":40}"#).unwrap(), true, 999);
    assert_eq!(u, usage(40, 0, 0));
    let u = resolve(
        read(r#"{"completion_tokens":5,"prompt_tokens":null}"#).unwrap(),
        true,
        999,
    );
    assert_eq!(u, usage(0, 0, 5));
}

#[test]
fn total_is_ignored_when_prompt_and_completion_are_both_present() {
    let r = raw(Some(10), Some(5), Some(u64::MAX), None);
    assert_eq!(resolve(r, true, 3), usage(10, 0, 5));
}

/// Case 3 of issue 11: embeddings with `{"total_tokens": 9}` only.
#[test]
fn total_only_on_embeddings_is_the_input() {
    let r = read(r#"{"total_tokens": 9}"#).unwrap();
    assert_eq!(resolve(r, false, 2), usage(9, 0, 0));
}

#[test]
fn total_only_on_a_generating_route_splits_at_the_prompt_estimate() {
    let r = raw(None, None, Some(100), None);
    assert_eq!(resolve(r, true, 30), usage(30, 0, 70));
    assert_eq!(resolve(r, true, 500), usage(100, 0, 0));
    let r = raw(None, None, Some(u64::MAX), Some(u64::MAX));
    assert_eq!(resolve(r, true, 7), usage(7, 7, u64::MAX - 7));
}

#[test]
fn total_with_one_count_leaves_the_rest_to_the_other() {
    assert_eq!(
        resolve(raw(Some(30), None, Some(100), None), true, 0),
        usage(30, 0, 70)
    );
    assert_eq!(
        resolve(raw(None, Some(70), Some(100), None), true, 0),
        usage(30, 0, 70)
    );
    // Embeddings never derive output from a total; totals below a count
    // saturate.
    assert_eq!(
        resolve(raw(Some(30), None, Some(100), None), false, 0),
        usage(30, 0, 0)
    );
    assert_eq!(
        resolve(raw(None, Some(70), Some(10), None), true, 0),
        usage(0, 0, 70)
    );
}

#[test]
fn cached_is_at_most_the_input() {
    assert_eq!(
        resolve(raw(Some(10), Some(1), None, Some(50)), true, 0),
        usage(10, 10, 1)
    );
    assert_eq!(
        resolve(raw(None, None, None, Some(50)), true, 0),
        usage(0, 0, 0)
    );
}

/// Case 10 of issue 11: `completion_tokens: 4294967295` on `max_tokens: 16`.
#[test]
fn clamp_bounds_output_and_input_and_says_so() {
    let r = read(r#"{"prompt_tokens":12,"completion_tokens":4294967295}"#).unwrap();
    let b = Bounds {
        max_input: 128_000,
        max_output: 16,
    };
    assert_eq!(clamp(resolve(r, true, 0), b), (usage(12, 0, 16), true));
    assert_eq!(clamp(usage(12, 3, 16), b), (usage(12, 3, 16), false));
    let b = Bounds {
        max_input: 5,
        max_output: u64::MAX,
    };
    assert_eq!(clamp(usage(12, 9, 1), b), (usage(5, 5, 1), true));
}

fn count() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        any::<u64>().prop_map(|n| Some(json!(n))),
        (0u64..100_000).prop_map(|n| Some(json!(n))),
        any::<i64>().prop_map(|n| Some(json!(n))),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| Some(json!(f))),
        Just(Some(json!(1e30))),
        Just(Some(json!("12"))),
        Just(Some(json!({"n": 1}))),
    ]
}

fn usage_object() -> impl Strategy<Value = Value> {
    let names = [
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "input_tokens",
        "output_tokens",
    ];
    (
        proptest::collection::vec(count(), 5),
        count(),
        any::<bool>(),
    )
        .prop_map(move |(counts, cached, input_details)| {
            let mut m = serde_json::Map::new();
            for (name, c) in names.iter().zip(counts) {
                if let Some(c) = c {
                    m.insert((*name).to_string(), c);
                }
            }
            if let Some(c) = cached {
                let key = if input_details {
                    "input_tokens_details"
                } else {
                    "prompt_tokens_details"
                };
                m.insert(
                    key.to_string(),
                    json!({ "cached_tokens": c, "audio_tokens": 0 }),
                );
            }
            Value::Object(m)
        })
}

proptest! {
    /// Any usage object (random counts, nulls, negatives, huge values)
    /// reads the same from bytes and from a Value, resolves with cached
    /// within input, and clamps within the bounds, idempotently.
    #[test]
    fn any_usage_object_settles_within_bounds(
        v in usage_object(),
        generates in any::<bool>(),
        estimate in any::<u64>(),
        max_input in any::<u64>(),
        max_output in 0u64..100_000,
    ) {
        let text = serde_json::to_vec(&v).unwrap();
        let r = read_usage_bytes(&text);
        // Compared over the Value parsed back from the same bytes: serde_json
        // parses a float to within 1 ulp (no `float_roundtrip`), so `v`
        // itself may hold a fraction the text no longer spells.
        let parsed: Value = serde_json::from_slice(&text).unwrap();
        prop_assert_eq!(r, read_usage(&parsed));
        let Some(r) = r else { return Ok(()) };
        let u = resolve(r, generates, estimate);
        prop_assert!(u.cached_tokens <= u.input_tokens);
        if let (Some(p), Some(c)) = (r.prompt, r.completion) {
            prop_assert_eq!((u.input_tokens, u.output_tokens), (p, c));
        }
        if !generates && r.completion.is_none() {
            prop_assert_eq!(u.output_tokens, 0);
        }
        let b = Bounds { max_input, max_output };
        let (c, clamped) = clamp(u, b);
        prop_assert!(c.input_tokens <= max_input && c.output_tokens <= max_output);
        prop_assert!(c.cached_tokens <= c.input_tokens);
        prop_assert_eq!(clamped, c != u);
        prop_assert_eq!(clamp(c, b), (c, false));
        // Billed within the hold: the cost of the clamped usage never
        // passes the worst case priced for the same bounds (B6, M3).
        let pricing = crate::pricing::Pricing::parse(
            include_str!("../../../../config/pricing.toml"),
            "config/pricing.toml",
        )
        .unwrap();
        for model in pricing.model_names() {
            let price = pricing.get(model).unwrap();
            prop_assert!(price.cost(&c) <= price.max_cost(max_input, max_output), "{}", model);
        }
    }

    /// The `usage_reader` fuzz entry (and its plain M2 oracle) holds on
    /// every shape of usage object, not only on what a fuzzer happens on.
    #[test]
    fn usage_objects_pass_the_fuzz_entry(seed in any::<[u8; 2]>(), v in usage_object()) {
        let mut data = seed.to_vec();
        data.extend_from_slice(&serde_json::to_vec(&v).unwrap());
        super::super::fuzz_usage(&data);
    }
}
