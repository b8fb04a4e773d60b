//! Tests of the JSON meter (M8, M2, M4, M5): fixtures at every split, the
//! paths that count and the ones that must not, malformed bodies,
//! and agreement with serde_json on what is well-formed (property tests:
//! `json/proptests.rs`).

use serde_json::{json, Map, Value};

use super::{JsonFacts, JsonMeter, MAX_USAGE_BYTES};

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/openai/",
            $name
        ))
    };
}
pub(super) use fixture;

pub(super) fn meter(chunks: &[&[u8]]) -> JsonFacts {
    let mut m = JsonMeter::new();
    for c in chunks {
        m.push(c);
    }
    m.finish()
}

pub(super) fn facts(body: &[u8]) -> JsonFacts {
    meter(&[body])
}

/// The facts of `body`, checked equal at every split point and byte by byte.
fn facts_any_split(body: &[u8]) -> JsonFacts {
    let whole = facts(body);
    for at in 0..=body.len() {
        let (a, b) = body.split_at(at);
        assert_eq!(meter(&[a, b]), whole, "split at {at}");
    }
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(meter(&bytes), whole, "byte by byte");
    whole
}

pub(super) fn usage_value(f: &JsonFacts) -> Option<Value> {
    f.usage
        .as_deref()
        .map(|u| serde_json::from_slice(u).unwrap())
}

fn text_of(body: Value) -> u64 {
    let f = facts_any_split(&serde_json::to_vec(&body).unwrap());
    assert!(f.well_formed);
    f.generated_text_bytes
}

#[test]
fn chat_fixture_gives_usage_text_and_choices() {
    let f = facts_any_split(fixture!("chat_completion.json"));
    assert!(f.well_formed && f.has_choices && !f.has_data && !f.is_error_body());
    assert_eq!(
        f.generated_text_bytes,
        "Hello! How can I assist you today?".len() as u64
    );
    let body: Value = serde_json::from_slice(fixture!("chat_completion.json")).unwrap();
    assert_eq!(usage_value(&f).as_ref(), Some(&body["usage"]));
    assert!(f
        .usage
        .unwrap()
        .starts_with(b"{\n    \"prompt_tokens\": 1219"));
}

#[test]
fn completion_fixture_counts_decoded_text() {
    let f = facts_any_split(fixture!("completion.json"));
    assert!(f.well_formed && f.has_choices);
    assert_eq!(
        f.generated_text_bytes,
        "\n\nThis is indeed a test".len() as u64
    );
    assert_eq!(
        usage_value(&f),
        Some(json!({"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}))
    );
}

#[test]
fn embeddings_fixture_generates_nothing() {
    let f = facts_any_split(fixture!("embeddings.json"));
    assert!(f.well_formed && f.has_data && !f.has_choices && !f.is_error_body());
    assert_eq!(f.generated_text_bytes, 0);
    assert_eq!(
        usage_value(&f),
        Some(json!({"prompt_tokens": 8, "total_tokens": 8}))
    );
}

#[test]
fn error_fixture_is_an_error_body() {
    let f = facts_any_split(fixture!("error_invalid_api_key.json"));
    assert!(f.well_formed && f.is_error_body() && f.usage.is_none());
}

#[test]
fn every_truncation_of_every_fixture_is_not_well_formed() {
    let all: [&[u8]; 4] = [
        fixture!("chat_completion.json"),
        fixture!("completion.json"),
        fixture!("embeddings.json"),
        fixture!("error_invalid_api_key.json"),
    ];
    for body in all {
        let end = body.iter().rposition(|&b| b == b'}').unwrap();
        for cut in 0..=end {
            assert!(!facts(&body[..cut]).well_formed, "cut at {cut}");
        }
    }
}

#[test]
fn usage_is_found_at_start_middle_and_end() {
    for body in [
        r#"{"usage":{"total_tokens":9},"data":[{"embedding":[1,2]}]}"#,
        r#"{"data":[{"embedding":[1,2]}],"usage":{"total_tokens":9},"model":"m"}"#,
        r#"{"data":[{"embedding":[1,2]}],"model":"m","usage":{"total_tokens":9}}"#,
    ] {
        let f = facts_any_split(body.as_bytes());
        assert_eq!(
            f.usage.as_deref(),
            Some(&b"{\"total_tokens\":9}"[..]),
            "{body}"
        );
        assert!(f.has_data && f.well_formed);
    }
}

#[test]
fn usage_value_is_raw_without_surrounding_whitespace() {
    let f = facts_any_split(b"{ \"usage\" :  {\"a\": 1.50e+2 }  , \"x\":1}");
    assert_eq!(f.usage.as_deref(), Some(&b"{\"a\": 1.50e+2 }"[..]));
    for (body, raw) in [
        (&b"{\"usage\": 12 }"[..], &b"12"[..]),
        (b"{\"usage\":-0.5e3}", b"-0.5e3"),
        (b"{\"usage\":null}", b"null"),
        (b"{\"usage\":\"a\\\"b\"}", b"\"a\\\"b\""),
        (b"{\"usage\":[1,[2]] ,\"y\":true}", b"[1,[2]]"),
    ] {
        assert_eq!(facts_any_split(body).usage.as_deref(), Some(raw));
    }
}

#[test]
fn nested_or_quoted_usage_is_not_top_level() {
    let body = json!({
        "choices": [{"message": {"content": "the \"usage\": {1} key", "usage": {"x": 1}},
                     "usage": {"prompt_tokens": 5}}],
        "data": {"usage": 3},
        "meta": "\"usage\":{\"prompt_tokens\":99}",
    });
    let f = facts_any_split(&serde_json::to_vec_pretty(&body).unwrap());
    assert_eq!(f.usage, None);
    assert!(f.well_formed);
}

#[test]
fn repeated_usage_last_one_wins() {
    let f = facts_any_split(br#"{"usage":{"a":1},"usage":{"b":2}}"#);
    assert_eq!(f.usage.as_deref(), Some(&br#"{"b":2}"#[..]));
    let big = format!(
        r#"{{"usage":{{"a":1}},"usage":"{}"}}"#,
        "x".repeat(MAX_USAGE_BYTES)
    );
    assert_eq!(
        facts(big.as_bytes()).usage,
        None,
        "the last one was dropped"
    );
}

#[test]
fn usage_over_the_bound_is_dropped_in_bounded_memory() {
    let fits = format!(r#"{{"usage":"{}"}}"#, "x".repeat(MAX_USAGE_BYTES - 2));
    assert_eq!(
        facts(fits.as_bytes()).usage.map(|u| u.len()),
        Some(MAX_USAGE_BYTES)
    );
    let body = format!(
        r#"{{"usage":"{}","x":1}}"#,
        "x".repeat(10 * MAX_USAGE_BYTES)
    );
    let mut m = JsonMeter::new();
    for c in body.as_bytes().chunks(1000) {
        m.push(c);
        assert!(m.heap_bytes() <= MAX_USAGE_BYTES);
    }
    let f = m.finish();
    assert!(f.well_formed && f.usage.is_none());
}

#[test]
fn truncated_usage_is_none() {
    let f = facts_any_split(br#"{"usage":{"prompt_tokens":5"#);
    assert!(!f.well_formed && f.usage.is_none());
}

#[test]
fn escaped_key_is_read_decoded() {
    let f = facts_any_split(br#"{"\u0075sage":{"a":1},"ch\u006fices":[{"text":"abc"}]}"#);
    assert_eq!(f.usage.as_deref(), Some(&br#"{"a":1}"#[..]));
    assert!(f.has_choices);
    assert_eq!(f.generated_text_bytes, 3);
}

#[test]
fn generated_text_counts_decoded_escapes_and_unicode() {
    // a " b \ c / é (2) € (3) 😀 (4, a surrogate pair) \n NUL, plus raw é and 😀.
    let body =
        r#"{"choices":[{"message":{"content":"a\"b\\c\/\u00e9\u20ac\ud83d\ude00\n\u0000é😀"}}]}"#;
    let f = facts_any_split(body.as_bytes());
    assert!(f.well_formed);
    assert_eq!(
        f.generated_text_bytes,
        3 + 2 + 1 + 2 + 3 + 4 + 1 + 1 + 2 + 4
    );
}

#[test]
fn content_parts_reasoning_and_refusal_count() {
    let message = json!({
        "role": "assistant",
        "content": [{"type": "text", "text": "abcd"}, {"type": "image_url", "image_url": {"url": "xxxxxxxx"}},
                    {"type": "text", "text": "ef"}, "loose string", {"text": 12}],
        "reasoning_content": "think", "reasoning": "more", "refusal": "no",
        "annotations": [{"text": "not counted"}],
    });
    assert_eq!(
        text_of(json!({"choices": [{"message": message}]})),
        4 + 2 + 5 + 4 + 2
    );
}

#[test]
fn tool_calls_and_function_call_count_names_and_arguments() {
    let body = json!({"choices": [{"message": {
        "content": null,
        "tool_calls": [
            {"id": "call_abcdefgh", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        ],
        "function_call": {"name": "legacy", "arguments": "[1]"},
    }, "finish_reason": "tool_calls"}]});
    assert_eq!(text_of(body), 11 + 16 + 1 + 2 + 6 + 3);
}

#[test]
fn only_generated_paths_count() {
    let body = json!({
        "id": "chatcmpl-123", "model": "gpt", "text": "top-level text is not generated",
        "choices": [{"index": 0, "text": "ok", "logprobs": {"content": [{"token": "ok"}]},
                     "message": {"role": "assistant", "name": "bot", "content": {"text": "obj"}}},
                    "a string choice", [{"text": "array in array"}]],
        "data": [{"embedding": [0.1, -2e-3, 3]}], "message": {"content": "top message"},
    });
    assert_eq!(text_of(body), 2);
}

#[test]
fn error_bodies_by_m5() {
    let err = facts_any_split(br#"{"error":{"message":"overloaded","type":"server_error"}}"#);
    assert!(err.is_error_body() && err.well_formed);
    let truncated = facts(br#"{"error":{"message":"overl"#);
    assert!(truncated.is_error_body() && !truncated.well_formed);
    let null_error = facts_any_split(br#"{"error":null,"usage":{"total_tokens":1}}"#);
    assert!(!null_error.is_error_body());
    for ok in [
        &br#"{"error":{"m":1},"choices":[]}"#[..],
        br#"{"data":[],"error":"x"}"#,
    ] {
        let f = facts_any_split(ok);
        assert!(f.has_error && !f.is_error_body());
    }
}

#[test]
fn embeddings_body_of_many_vectors_generates_nothing() {
    let vec: Vec<f64> = (0..300).map(|i| f64::from(i) * -0.001_234_5).collect();
    let data: Vec<Value> = (0..4)
        .map(|i| json!({"object": "embedding", "index": i, "embedding": vec}))
        .collect();
    let body = json!({"object": "list", "data": data, "model": "m", "usage": {"total_tokens": 9}});
    for bytes in [
        serde_json::to_vec(&body).unwrap(),
        serde_json::to_vec_pretty(&body).unwrap(),
    ] {
        let f = facts(&bytes);
        let chunked: Vec<&[u8]> = bytes.chunks(7).collect();
        assert_eq!(meter(&chunked), f);
        assert!(f.well_formed && f.has_data);
        assert_eq!(
            (f.generated_text_bytes, usage_value(&f)),
            (0, Some(json!({"total_tokens": 9})))
        );
    }
}

#[test]
fn malformed_bodies_are_not_well_formed_as_serde_says() {
    let bad: &[&[u8]] = &[
        b"",
        b"   ",
        b"[]",
        b"1",
        b"\"s\"",
        b"{",
        b"{}x",
        b"{} {}",
        b"{\"a\"}",
        b"{\"a\":}",
        b"{,}",
        b"{\"a\":1,}",
        b"{\"a\":[1,]}",
        b"{\"a\":01}",
        b"{\"a\":1.}",
        b"{\"a\":.5}",
        b"{\"a\":-}",
        b"{\"a\":1e}",
        b"{\"a\":1e+}",
        b"{\"a\":+1}",
        b"{\"a\":tru}",
        b"{\"a\":nul}",
        b"{\"a\":True}",
        b"{\"a\":\"\x01\"}",
        b"{\"a\":\"\\x\"}",
        b"{\"a\":\"\\u12G4\"}",
        b"{\"a\":\"\\ud800\"}",
        b"{\"a\":\"\\udc00\"}",
        b"{\"a\":\"\\ud800\\u0041\"}",
        b"{\"a\":\"\\ud800\\n\"}",
        b"{\"a\":\"\xff\"}",
        b"{\"a\":\"\xc0\x80\"}",
        b"{\"a\":\"\xed\xa0\x80\"}",
        b"{\"a\":\"\xf4\x90\x80\x80\"}",
        b"{\"a\":\"\xe2\x82\"}",
        b"{\"a\":[}",
        b"{\"a\":{]}",
        b"\xef\xbb\xbf{}",
        b"{'a':1}",
    ];
    for body in bad {
        assert!(
            serde_json::from_slice::<Map<String, Value>>(body).is_err(),
            "{body:?}"
        );
        assert!(
            !facts_any_split(body).well_formed,
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    let good: &[&[u8]] = &[
        b" {} \r\n\t",
        b"{\"a\":-0.0e-0}",
        b"{\"a\":[1E+2,0,-0,1.5e9]}",
        b"{\"a\":\"\\u0000\x7f\"}",
        b"{\"\":{\"\":[[],{}]}}",
        b"{\"a\":\"\xf4\x8f\xbf\xbf\xe0\xa0\x80\"}",
        b"{\"a\":true,\"b\":false,\"c\":null}",
    ];
    for body in good {
        assert!(
            serde_json::from_slice::<Map<String, Value>>(body).is_ok(),
            "{body:?}"
        );
        assert!(
            facts_any_split(body).well_formed,
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn nesting_limit_is_serde_jsons() {
    for depth in [126, 127, 128, 1000] {
        let body = format!("{}{}", "{\"a\":".repeat(depth - 1), "{}").into_bytes();
        let body = [body, b"}".repeat(depth - 1)].concat();
        let serde_ok = serde_json::from_slice::<Value>(&body).is_ok();
        assert_eq!(facts(&body).well_formed, serde_ok, "depth {depth}");
        assert_eq!(serde_ok, depth <= 127);
    }
}
