//! Tests of the SSE meter: framing (M11), forwarding (P2, P2a), usage (M2),
//! generated text (M4) and in-band errors (M5).
#![allow(clippy::indexing_slicing)] // Tests index fixed data freely.

use bytes::Bytes;
use proptest::prelude::*;

use super::super::fuzz::fuzz_entry;
use super::super::usage::{resolve, Usage};
use super::*;

const SSE: &str =
    include_str!("../../../../tests/fixtures/openai/chat_completion_stream_with_usage.sse");

/// Feed `text` in the given pieces, then finish: (output, meter).
fn feed(hide: bool, pieces: &[&[u8]]) -> (Vec<u8>, SseMeter) {
    let mut m = SseMeter::new(hide);
    let mut out = Vec::new();
    for p in pieces {
        out.extend_from_slice(&m.push(Bytes::copy_from_slice(p)));
    }
    out.extend_from_slice(&m.finish());
    (out, m)
}

fn sized(hide: bool, text: &[u8], size: usize) -> (Vec<u8>, SseMeter) {
    feed(hide, &text.chunks(size).collect::<Vec<_>>())
}

fn readings(m: &SseMeter) -> (Option<RawUsage>, usize, bool, bool) {
    (m.usage(), m.text_bytes(), m.done(), m.error())
}

/// Every two-piece split and every piece size give the output and the
/// readings of one push.
fn same_in_any_chunking(hide: bool, text: &[u8]) -> (Vec<u8>, SseMeter) {
    let (whole, m) = feed(hide, &[text]);
    for at in 0..=text.len() {
        let (a, b) = text.split_at(at);
        let (out, m2) = feed(hide, &[a, b]);
        assert_eq!(out, whole, "split at {at}");
        assert_eq!(readings(&m2), readings(&m), "split at {at}");
    }
    for size in 1..=text.len().min(64) {
        let (out, m2) = sized(hide, text, size);
        assert_eq!(out, whole, "size {size}");
        assert_eq!(readings(&m2), readings(&m), "size {size}");
    }
    (whole, m)
}

fn chunk(delta: &str) -> String {
    format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{delta}}}]}}\n\n")
}

fn raw(prompt: u64, completion: u64) -> Option<RawUsage> {
    Some(RawUsage {
        prompt: Some(prompt),
        completion: Some(completion),
        total: Some(prompt + completion),
        cached: None,
    })
}

#[test]
fn fixture_passes_through_unchanged_at_every_byte_boundary() {
    let (out, m) = same_in_any_chunking(false, SSE.as_bytes());
    assert_eq!(out, SSE.as_bytes());
    assert_eq!(
        m.usage().map(|u| resolve(u, true, 0)),
        Some(Usage {
            input_tokens: 19,
            cached_tokens: 0,
            output_tokens: 7
        })
    );
    assert!(m.done() && !m.error());
    assert_eq!(m.text_bytes(), "Hello! How can I help?".len());
}

#[test]
fn injected_usage_chunk_is_hidden_and_still_read() {
    let (out, m) = same_in_any_chunking(true, SSE.as_bytes());
    let out = String::from_utf8(out).unwrap();
    let usage_event = SSE.split_inclusive("\n\n").nth(4).unwrap();
    assert!(usage_event.contains("\"choices\":[]"));
    assert_eq!(out, SSE.replace(usage_event, ""));
    let u = m.usage().unwrap();
    assert_eq!(
        (u.prompt, u.completion, u.cached),
        (Some(19), Some(7), Some(0))
    );
    assert!(out.ends_with("data: [DONE]\n\n"));
}

#[test]
fn usage_only_chunk_without_choices_is_hidden_in_any_line_ending() {
    for eol in ["\n", "\r\n", "\r"] {
        let text = format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"ab\"}}}}]}}{eol}{eol}\
             data: {{\"usage\":{{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}}}{eol}{eol}\
             data: [DONE]{eol}{eol}"
        );
        let (out, m) = same_in_any_chunking(true, text.as_bytes());
        let kept = format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"ab\"}}}}]}}{eol}{eol}data: [DONE]{eol}{eol}"
        );
        assert_eq!(String::from_utf8(out).unwrap(), kept, "{eol:?}");
        assert_eq!(m.usage(), raw(3, 1));
        assert_eq!(m.text_bytes(), 2);
    }
}

/// Case 5 of issue 11.
#[test]
fn usage_json_split_over_two_data_lines_is_read_from_the_joined_data() {
    let text = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":11,\n\
                data: \"completion_tokens\":4,\"total_tokens\":15}}\n\ndata: [DONE]\n\n";
    let (out, m) = same_in_any_chunking(false, text.as_bytes());
    assert_eq!(out, text.as_bytes());
    assert_eq!(m.usage(), raw(11, 4));
    let (out, m) = same_in_any_chunking(true, text.as_bytes());
    assert_eq!(out, b"data: [DONE]\n\n");
    assert_eq!(m.usage(), raw(11, 4));
}

#[test]
fn cr_crlf_and_mixed_line_endings_read_alike() {
    let lf = format!(
        "{}{}data: {{\"choices\":[{{\"delta\":{{}}}}],\"usage\":{{\"prompt_tokens\":5,\"completion_tokens\":2}}}}\n\ndata: [DONE]\n\n",
        chunk(r#"{"content":"Hello"}"#),
        chunk(r#"{"content":", world"}"#),
    );
    let want = {
        let (out, m) = feed(false, &[lf.as_bytes()]);
        assert_eq!(out, lf.as_bytes());
        readings(&m)
    };
    assert_eq!(want.1, 12);
    let crlf = lf.replace('\n', "\r\n");
    let cr = lf.replace('\n', "\r");
    // Mixed: each event's data line and blank line end differently, in
    // turn (a CR followed by an LF would be one CRLF, so never that pair).
    let mut mixed = String::new();
    for (i, event) in lf.split_terminator("\n\n").enumerate() {
        let (line_end, blank) = [("\n", "\r"), ("\r\n", "\n"), ("\r", "\r\n")][i % 3];
        mixed.push_str(event);
        mixed.push_str(line_end);
        mixed.push_str(blank);
    }
    for text in [crlf, cr, mixed] {
        let (out, m) = same_in_any_chunking(false, text.as_bytes());
        assert_eq!(out, text.as_bytes());
        assert_eq!(readings(&m), want, "{text:?}");
    }
}

#[test]
fn a_cr_ended_event_is_forwarded_at_once_and_its_lf_follows_it() {
    let mut m = SseMeter::new(false);
    let first = m.push(Bytes::from_static(
        b"data: {\"choices\":[{\"text\":\"ab\"}]}\r\r",
    ));
    assert_eq!(&first[..], b"data: {\"choices\":[{\"text\":\"ab\"}]}\r\r");
    assert_eq!(m.text_bytes(), 2);
    assert_eq!(&m.push(Bytes::from_static(b"\n"))[..], b"\n");
    assert_eq!(m.pending_len(), 0);
    let last = m.push(Bytes::from_static(b"data: [DONE]\r\n\r\n"));
    assert_eq!(&last[..], b"data: [DONE]\r\n\r\n");
    assert!(m.done());
}

/// Case 4 of issue 11: 1,200 bytes of tool-call arguments and no text.
#[test]
fn tool_call_arguments_count_as_generated_text() {
    let mut text = chunk(
        r#"{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_abc","type":"function","function":{"name":"","arguments":""}}]}"#,
    );
    // 100 events of 12 decoded bytes each: `{\"city\": 1}` decodes to
    // `{"city": 1}` plus one more byte.
    for _ in 0..100 {
        text.push_str(&chunk(
            r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\": 12}"}}]}"#,
        ));
    }
    let mut m = SseMeter::new(true);
    let out = m.push(Bytes::from(text.clone()));
    assert_eq!(out.len(), text.len());
    assert_eq!(m.text_bytes(), 1200);
    // The client drops here: no usage, no [DONE].
    assert_eq!(m.usage(), None);
    assert_eq!(estimate_tokens(m.text_bytes()), 300);
}

#[test]
fn reasoning_refusal_parts_and_function_names_count() {
    let text = [
        chunk(r#"{"reasoning_content":"thinking"}"#),
        chunk(r#"{"reasoning":"more"}"#),
        chunk(r#"{"content":[{"type":"text","text":"héllo"},{"type":"image_url","image_url":{"url":"xyz"}}]}"#),
        chunk(r#"{"refusal":"no"}"#),
        chunk(r#"{"content":[{"type":"refusal","refusal":"nope"}]}"#),
        chunk(r#"{"tool_calls":[{"function":{"name":"get","arguments":"{}"}},{"function":{"name":"put"}}]}"#),
        chunk(r#"{"function_call":{"name":"f","arguments":"xy"}}"#),
        chunk(r#"{"content":"\u00e9\n","role":"assistant","id":"not counted"}"#),
        "data: {\"choices\":[{\"text\":\"done\"},{\"text\":\"!\"}]}\n\n".to_string(),
    ]
    .concat();
    let (out, m) = same_in_any_chunking(false, text.as_bytes());
    assert_eq!(out, text.as_bytes());
    let want = "thinking".len()
        + "more".len()
        + "héllo".len()
        + "no".len()
        + "nope".len()
        + "get{}put".len()
        + "fxy".len()
        + "é\n".len()
        + "done!".len();
    assert_eq!(m.text_bytes(), want);
}

#[test]
fn odd_shapes_count_nothing_and_never_fail_the_event() {
    let text = [
        chunk(r#"{"content":42,"reasoning":{"text":"x"},"tool_calls":{"a":1}}"#),
        "data: {\"choices\":{\"0\":{\"delta\":{\"content\":\"x\"}}}}\n\n".to_string(),
        "data: [1,2,3]\n\n".to_string(),
        "data: \"just a string\"\n\n".to_string(),
        "data: {not json\n\n".to_string(),
        chunk(r#"{"content":"ok"}"#),
    ]
    .concat();
    let (out, m) = same_in_any_chunking(true, text.as_bytes());
    assert_eq!(out, text.as_bytes());
    assert_eq!(m.text_bytes(), 2);
    assert_eq!(m.usage(), None);
}

/// serde_json's depth limit (128) turns hostile nesting into a parse
/// error: the event is forwarded and read as nothing, no stack overflow.
#[test]
fn deep_nesting_is_forwarded_and_read_as_nothing() {
    let text = [
        format!("data: {}\n\n", "[".repeat(100_000)),
        format!(
            "data: {{\"choices\":{}\n\n",
            "[{\"delta\":{\"content\":\"a\"},\"x\":".repeat(5_000)
        ),
        chunk(r#"{"content":"ok"}"#),
    ]
    .concat();
    for size in [1000, 4096, text.len()] {
        let (out, m) = sized(true, text.as_bytes(), size);
        assert_eq!(out, text.as_bytes());
        assert_eq!(m.text_bytes(), 2);
    }
}

#[test]
fn usage_on_a_chunk_with_content_is_read_and_never_hidden() {
    let text = "data: {\"choices\":[{\"delta\":{\"content\":\"hey\"}}],\
                \"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}\n\n\
                data: [DONE]\n\n";
    let (out, m) = same_in_any_chunking(true, text.as_bytes());
    assert_eq!(out, text.as_bytes());
    assert_eq!(m.usage(), raw(9, 3));
    assert_eq!(m.text_bytes(), 3);
    // Usage on a tool-call chunk, Anthropic-style names.
    let text = "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\"{}\"}}]}}],\
                \"usage\":{\"input_tokens\":5,\"output_tokens\":1}}\n\n";
    let (out, m) = same_in_any_chunking(true, text.as_bytes());
    assert_eq!(out, text.as_bytes());
    assert_eq!(m.usage().and_then(|u| u.prompt), Some(5));
}

#[test]
fn a_later_usage_replaces_an_earlier_one_and_null_usage_does_not() {
    let text = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n\
                data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}\n\n\
                data: {\"choices\":[],\"usage\":null}\n\n\
                data: {\"choices\":[],\"usage\":{\"prompt_tokens\":null}}\n\n";
    let (out, m) = feed(true, &[text.as_bytes()]);
    assert_eq!(m.usage(), raw(9, 3));
    // The null usage is not a usage chunk; an empty usage object is.
    assert_eq!(out, b"data: {\"choices\":[],\"usage\":null}\n\n");
}

/// Case 6 of issue 11 (the meter's part: the error is seen).
#[test]
fn a_200_stream_with_only_an_error_event_is_an_error() {
    for text in [
        "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n",
        "event: error\ndata: {\"type\":\"error\",\"message\":\"overloaded\"}\n\n",
        "event: error\ndata: not json\n\n",
        "event:error\n\n",
    ] {
        let (out, m) = same_in_any_chunking(false, text.as_bytes());
        assert_eq!(out, text.as_bytes());
        assert!(m.error(), "{text}");
        assert_eq!(m.usage(), None);
    }
    for text in [
        "data: {\"error\":null,\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"error\"}}]}\n\n",
        "event: errors\ndata: {}\n\n",
        ": error\n\n",
        "data: {\"x\":{\"error\":1}}\n\n",
    ] {
        assert!(!feed(false, &[text.as_bytes()]).1.error(), "{text}");
    }
}

#[test]
fn comments_and_other_fields_pass_through() {
    let text = ": keep-alive\n\n\
                :another comment\r\n\
                event: message\n\
                id: 42\n\
                retry: 1000\n\
                x-custom: 1\n\
                data:{\"choices\":[{\"delta\":{\"content\":\"abc\"}}]}\n\n\
                data\n\n\
                data:\n\n\
                datum: {\"choices\":[{\"delta\":{\"content\":\"zzz\"}}]}\n\n\
                data: [DONE]\n\n";
    for hide in [false, true] {
        let (out, m) = same_in_any_chunking(hide, text.as_bytes());
        assert_eq!(out, text.as_bytes());
        assert_eq!(m.text_bytes(), 3);
        assert!(m.done());
    }
}

#[test]
fn blank_lines_between_events_and_a_bom_are_harmless() {
    let text = "\u{feff}data: {\"choices\":[{\"delta\":{\"content\":\"ab\"}}]}\n\n\n\n\r\n\r\r\
                data: [DONE]\n\n";
    let (out, m) = same_in_any_chunking(true, text.as_bytes());
    assert_eq!(out, text.as_bytes());
    assert_eq!(m.text_bytes(), 2);
    assert!(m.done());
}

#[test]
fn an_unterminated_tail_is_read_and_returned_at_finish() {
    let mut m = SseMeter::new(false);
    let tail = "data: {\"choices\":[{\"delta\":{\"content\":\"abc\"}}]}";
    assert!(m.push(Bytes::from_static(tail.as_bytes())).is_empty());
    assert_eq!(m.pending_len(), tail.len());
    assert_eq!(m.text_bytes(), 0);
    assert_eq!(&m.finish()[..], tail.as_bytes());
    assert_eq!(m.text_bytes(), 3);
    assert_eq!(m.pending_len(), 0);
    // A hidden usage-only tail is read and not returned.
    let mut m = SseMeter::new(true);
    m.push(Bytes::from_static(
        b"data: {\"choices\":[],\"usage\":{\"total_tokens\":5}}",
    ));
    assert!(m.finish().is_empty());
    assert_eq!(m.usage().and_then(|u| u.total), Some(5));
}

#[test]
fn complete_events_are_forwarded_without_a_copy() {
    for hide in [false, true] {
        let mut m = SseMeter::new(hide);
        let text = Bytes::from(format!("{}{}data: {{\"cho", chunk("{}"), chunk("{}")));
        let out = m.push(text.clone());
        assert_eq!(out.as_ptr(), text.as_ptr(), "hide {hide}");
        assert_eq!(out.len(), text.len() - "data: {\"cho".len());
    }
}

#[test]
fn estimate_is_four_bytes_a_token_rounded_up() {
    let cases = [(0, 0), (1, 1), (4, 1), (5, 2), (1200, 300), (1201, 301)];
    for (bytes, tokens) in cases {
        assert_eq!(estimate_tokens(bytes), tokens);
    }
    assert_eq!(estimate_tokens(usize::MAX), (usize::MAX / 4 + 1) as u64);
}

#[test]
fn whole_answers_count_message_text() {
    let read = |s: &str| generated_text_bytes(&serde_json::from_str(s).unwrap());
    assert_eq!(
        read(include_str!(
            "../../../../tests/fixtures/openai/chat_completion.json"
        )),
        "Hello! How can I assist you today?".len()
    );
    assert_eq!(
        read(include_str!(
            "../../../../tests/fixtures/openai/completion.json"
        )),
        "\n\nThis is indeed a test".len()
    );
    assert_eq!(
        read(include_str!(
            "../../../../tests/fixtures/openai/embeddings.json"
        )),
        0
    );
    let tools = r#"{"choices":[{"message":{"content":null,"reasoning_content":"hmm",
        "tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]}}]}"#;
    assert_eq!(
        read(tools),
        "hmm".len() + "get_weather".len() + r#"{"city":"Paris"}"#.len()
    );
    assert_eq!(read("[1]"), 0);
    assert_eq!(read(r#"{"error":{"message":"x"}}"#), 0);
}

/// Bytes that look like SSE: the framer's and reader's tokens, in any
/// order.
fn sse_like() -> impl Strategy<Value = Vec<u8>> {
    let token = prop::sample::select(vec![
        "data: ",
        "data:",
        "event: error",
        ": c",
        "\r",
        "\n",
        "\r\n",
        "\n\n",
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"total_tokens\":9}}",
        "{\"choices\":[{\"delta\":{\"content\":\"ab\",\"tool_calls\":[{\"function\":{\"arguments\":\"x\"}}]}}]",
        ",\"usage\":{\"completion_tokens\":2}}",
        "[DONE]",
        "{\"error\":1}",
        "\u{feff}",
        "é",
        "\"",
        "{",
        "}",
    ]);
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat().into_bytes())
}

proptest! {
    #[test]
    fn sse_like_streams_pass_the_fuzz_invariants(seed in any::<[u8; 2]>(), s in sse_like()) {
        let mut data = seed.to_vec();
        data.extend_from_slice(&s);
        fuzz_entry(&data);
    }

    #[test]
    fn arbitrary_bytes_pass_the_fuzz_invariants(data in prop::collection::vec(any::<u8>(), 0..300)) {
        fuzz_entry(&data);
    }
}

/// The loop-based pseudo-fuzz: 100,000 seeded inputs mixing SSE tokens
/// with random bytes (`SSEMETER_FUZZ_ITERS` to run longer).
#[test]
fn pseudo_fuzz_100k() {
    use proptest::test_runner::{RngAlgorithm, TestRng};
    const TOKENS: [&[u8]; 10] = [
        b"data: ",
        b"\r",
        b"\n",
        b"\r\n",
        b"{\"choices\":[],\"usage\":{\"prompt_tokens\":1}}",
        b"{\"choices\":[{\"delta\":{\"content\":\"a\"}}]}",
        b"[DONE]",
        b"event: error",
        b":",
        b"\\u00e9",
    ];
    let mut rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut data = Vec::new();
    let iters = std::env::var("SSEMETER_FUZZ_ITERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000u64);
    for _ in 0..iters {
        data.clear();
        let n = rng.next_u32() % 24;
        for _ in 0..n {
            let r = rng.next_u32();
            match TOKENS.get((r % 16) as usize) {
                Some(t) => data.extend_from_slice(t),
                None => data.push((r >> 8) as u8),
            }
        }
        fuzz_entry(&data);
    }
}

/// One walker, two inputs: a chunk's text counted from its bytes and from
/// its `Value` agree.
#[test]
fn stream_and_whole_answer_readers_agree() {
    let answer = include_str!("../../../../tests/fixtures/openai/chat_completion.json");
    let mut texts: Vec<&str> = SSE
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    texts.push(answer);
    for t in texts {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(t) else {
            continue;
        };
        let facts = super::super::chunk::read_chunk(t.as_bytes()).unwrap();
        assert_eq!(facts.text_bytes, generated_text_bytes(&v), "{t}");
    }
}
