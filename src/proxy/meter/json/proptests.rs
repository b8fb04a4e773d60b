//! Property tests of the JSON meter (M8, M2, M4, M5): facts equal a
//! reference computed from a whole `serde_json::Value` parse, for random
//! answers in OpenAI's shapes and random JSON; fuzz entry on mutated
//! answers, number arrays and 100k pseudo-random inputs.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng};
use serde_json::{Map, Value};

use super::fuzz_entry;
use super::tests::{facts, fixture, meter, usage_value};

/// M2/M4/M5 facts computed from a whole parsed body: the oracle.
fn reference(v: &Value) -> (Option<&Value>, bool, bool, bool, u64) {
    let top = v.as_object().unwrap();
    let has_error = top.get("error").is_some_and(|e| !e.is_null());
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map_or(0, |s| s.len() as u64);
    let mut text = 0;
    for choice in top
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        text += s(choice.get("text"));
        let Some(m) = choice.get("message").filter(|m| m.is_object()) else {
            continue;
        };
        text += s(m.get("content"))
            + s(m.get("reasoning_content"))
            + s(m.get("reasoning"))
            + s(m.get("refusal"));
        for part in m
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            text += s(part.get("text").filter(|_| part.is_object()));
        }
        let calls = m
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        let tool_fns = calls
            .filter(|c| c.is_object())
            .filter_map(|c| c.get("function"));
        for f in tool_fns
            .chain(m.get("function_call"))
            .filter(|f| f.is_object())
        {
            text += s(f.get("name")) + s(f.get("arguments"));
        }
    }
    let present = |k: &str| top.get(k).is_some_and(|v| !v.is_null());
    let (choices, data) = (present("choices"), present("data"));
    (top.get("usage"), has_error, choices, data, text)
}

const KEYS: &[&str] = &[
    "usage",
    "error",
    "choices",
    "data",
    "message",
    "text",
    "content",
    "reasoning_content",
    "reasoning",
    "refusal",
    "tool_calls",
    "function_call",
    "function",
    "name",
    "arguments",
    "type",
    "",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![3 => prop::sample::select(KEYS).prop_map(String::from), 1 => any::<String>()]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        "[a-z\"\\\\/\n\t\u{0}\u{1f}é€😀]{0,12}".prop_map(Value::from),
    ]
}

/// Any JSON value, keys biased towards the ones that matter.
fn value() -> BoxedStrategy<Value> {
    leaf()
        .prop_recursive(5, 48, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
                prop::collection::vec((key(), inner), 0..5)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
        .boxed()
}

/// An object with the given members (each maybe absent) and random others.
fn object(members: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    let extra = prop::collection::vec((key(), value()), 0..3);
    let members: Vec<_> = members
        .into_iter()
        .map(|(k, v)| prop::option::of(v.prop_map(move |v| (k, v))))
        .collect();
    (extra, members)
        .prop_map(|(extra, members)| {
            let mut map: Map<String, Value> = extra.into_iter().collect();
            map.extend(
                members
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.to_owned(), v)),
            );
            Value::Object(map)
        })
        .boxed()
}

fn text() -> BoxedStrategy<Value> {
    prop_oneof![3 => any::<String>().prop_map(Value::from), 1 => value()].boxed()
}

fn list(item: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop_oneof![4 => prop::collection::vec(item, 0..4).prop_map(Value::from), 1 => value()].boxed()
}

/// An answer in OpenAI's shapes, each part perturbed now and then.
fn answer() -> BoxedStrategy<Value> {
    let function = object(vec![("name", text()), ("arguments", text())]);
    let call = object(vec![("id", text()), ("function", function.clone())]);
    let part =
        prop_oneof![3 => object(vec![("type", text()), ("text", text())]), 1 => value()].boxed();
    let content = prop_oneof![text(), list(part)].boxed();
    let message = object(vec![
        ("content", content),
        ("reasoning_content", text()),
        ("reasoning", text()),
        ("refusal", text()),
        ("tool_calls", list(call)),
        ("function_call", function),
    ]);
    let choice =
        prop_oneof![4 => object(vec![("message", message), ("text", text())]), 1 => value()]
            .boxed();
    object(vec![
        ("choices", list(choice)),
        ("usage", value()),
        ("error", value()),
        ("data", value()),
    ])
}

/// The meter's facts for `bytes` (split at `cut`) are the reference's for
/// the same bytes parsed whole by serde_json (parsed, not the generated
/// value: serde_json's default float reading does not always round-trip).
fn check_against_reference(bytes: &[u8], cut: usize) {
    let v: Value = serde_json::from_slice(bytes).unwrap();
    let (a, b) = bytes.split_at(cut.min(bytes.len()));
    let f = meter(&[a, b]);
    assert_eq!(f, facts(bytes), "split changed the facts");
    let (usage, has_error, has_choices, has_data, text) = reference(&v);
    assert!(f.well_formed);
    assert_eq!(usage_value(&f).as_ref(), usage);
    assert_eq!(
        (f.has_error, f.has_choices, f.has_data),
        (has_error, has_choices, has_data)
    );
    assert_eq!(f.generated_text_bytes, text);
}

proptest! {
    #![proptest_config(Config { cases: 1000, ..Config::default() })]

    #[test]
    fn facts_equal_the_reference(v in prop_oneof![answer(), object(vec![])], cut in any::<prop::sample::Index>()) {
        let compact = serde_json::to_vec(&v).unwrap();
        check_against_reference(&compact, cut.index(compact.len() + 1));
        let pretty = serde_json::to_vec_pretty(&v).unwrap();
        check_against_reference(&pretty, cut.index(pretty.len() + 1));
    }

    /// Number arrays, valid or nearly (the fast number loop's ground):
    /// well-formed exactly when serde_json says so, whatever the chunking.
    #[test]
    fn number_arrays_agree_with_serde(
        body in r#"\{"usage":\[(-?[0-9]{0,3}[.]?[0-9]{0,12}([eE][+-]?[0-9]{0,2})?,[ \n]{0,7}){0,12}-?[0-9]{1,3}(\.[0-9]{1,9})?[ ]?\]\}"#,
        seed in any::<u8>(),
    ) {
        let mut data = vec![seed];
        data.extend(body.as_bytes());
        fuzz_entry(&data);
    }

    #[test]
    fn fuzz_entry_holds_on_answers(v in answer(), seed in any::<u8>(), flips in prop::collection::vec(any::<(prop::sample::Index, u8)>(), 0..3)) {
        let mut data = vec![seed];
        data.extend(serde_json::to_vec(&v).unwrap());
        fuzz_entry(&data);
        for (at, byte) in flips {
            let at = at.index(data.len());
            data[at] = byte;
            fuzz_entry(&data);
        }
    }
}

/// Pseudo-fuzz: 100k inputs from a seeded RNG: random bytes biased towards
/// JSON's, and fixtures with a few bytes changed, inserted or cut.
#[test]
fn pseudo_fuzz_random_bytes() {
    const ALPHABET: &[u8] = b"{}[]:,\"\\ 0123456789.-+eEtrufalsnu\n\xc3\xa9\xff";
    const FIXTURES: [&[u8]; 3] = [
        fixture!("chat_completion.json"),
        fixture!("completion.json"),
        fixture!("error_invalid_api_key.json"),
    ];
    let mut rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[11; 32]);
    let mut data = Vec::new();
    for round in 0..100_000 {
        data.clear();
        data.push(rng.random());
        let biased = rng.random_bool(0.7);
        let pick = |rng: &mut TestRng| {
            if biased {
                ALPHABET[rng.random_range(0..ALPHABET.len())]
            } else {
                rng.random()
            }
        };
        if round % 2 == 0 {
            for _ in 0..rng.random_range(0..64) {
                data.push(pick(&mut rng));
            }
        } else {
            data.extend_from_slice(FIXTURES[round % 3]);
            for _ in 0..rng.random_range(1..4) {
                if data.len() < 2 {
                    break;
                }
                let at = rng.random_range(1..data.len());
                match rng.random_range(0..3) {
                    0 => data[at] = pick(&mut rng),
                    1 => data.insert(at, pick(&mut rng)),
                    _ => data.truncate(at),
                }
            }
        }
        fuzz_entry(&data);
    }
}
