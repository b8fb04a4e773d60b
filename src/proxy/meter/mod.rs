//! Meter: reads token usage from answers as they pass (P2, U1, U4, M2-M5,
//! M8, M11). Pure, no I/O, and incremental: the relay feeds it each chunk
//! as it forwards it, so no answer is ever held whole.
//!
//! - `usage`: a `usage` object read count by count (M2), resolved into
//!   billed tokens and bounded by the request (M3).
//! - `chunk`: one JSON chunk of a stream (or a whole answer as a value):
//!   the generated text (M4), its `usage`, an `error` member (M5).
//! - `sse`: the WHATWG event-stream framer and meter (M11, P2, P2a): hands
//!   back the bytes to forward, whole events as soon as each is complete,
//!   and hides the usage-only chunk the gateway asked for itself.
//! - `json`: a non-streamed answer scanned in bounded state (M8): the
//!   top-level `usage`, the generated text, whether it is an error body.
//! - `fuzz`: entries for the cargo-fuzz targets (`fuzz/`): `fuzz_sse`,
//!   `fuzz_usage`, and `fuzz_json` (in `json`).

mod chunk;
mod fuzz;
mod json;
mod sse;
mod usage;

pub use fuzz::{fuzz_entry as fuzz_sse, fuzz_usage};
pub use json::{fuzz_entry as fuzz_json, JsonFacts, JsonMeter};
pub use sse::{estimate_tokens, generated_text_bytes, SseMeter};
pub use usage::{clamp, read_usage, read_usage_bytes, resolve, Bounds, RawUsage};

/// The usage of a whole non-streamed answer (chat, completions,
/// embeddings), for callers that hold one (benches, tests): the same
/// reading the relay does chunk by chunk.
pub fn usage_of_json(body: &[u8]) -> Option<RawUsage> {
    let mut m = JsonMeter::new();
    m.push(body);
    m.finish().usage.as_deref().and_then(read_usage_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_usage_and_cached_tokens_from_json() {
        let body = include_bytes!("../../../tests/fixtures/openai/chat_completion.json");
        let u = usage_of_json(body).unwrap();
        assert_eq!(
            (u.prompt, u.cached, u.completion),
            (Some(1219), Some(1024), Some(10))
        );
        let e = include_bytes!("../../../tests/fixtures/openai/embeddings.json");
        assert_eq!(usage_of_json(e).unwrap().completion, None);
        assert_eq!(usage_of_json(b"{\"id\":1}"), None);
    }
}
