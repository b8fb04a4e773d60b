//! Meter: reads token usage from responses as they pass (P2, U1, U4).
//! Pure, no I/O: `usage_of_json` reads a whole JSON body (the tail first,
//! `tail.rs`, then serde when the tail cannot answer); `SseMeter`
//! (`sse.rs`) is fed a stream's bytes chunk by chunk, hands back the bytes
//! to forward (whole events, as soon as each is complete), and remembers
//! the usage chunk and how much text went by, for a stream cut short.
//!
//! When the gateway itself asked for `stream_options.include_usage`, the
//! usage-only chunk (`"choices": []`) is the gateway's business and is not
//! forwarded: the client gets the shape it asked for.

mod sse;
mod tail;

use serde::Deserialize;

pub use sse::SseMeter;

use crate::pricing::Usage;
use tail::trailing_usage;

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<WireDetails>,
}

#[derive(Deserialize)]
struct WireDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    fn from(w: WireUsage) -> Usage {
        let cached = w
            .prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
            .min(w.prompt_tokens);
        Usage {
            input_tokens: w.prompt_tokens,
            cached_tokens: cached,
            output_tokens: w.completion_tokens,
        }
    }
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// The `usage` of a non-streamed response (chat, completions, embeddings).
pub fn usage_of_json(body: &[u8]) -> Option<Usage> {
    if let Some(u) = trailing_usage(body) {
        return Some(u);
    }
    serde_json::from_slice::<WithUsage>(body)
        .ok()
        .and_then(|w| w.usage)
        .map(Usage::from)
}

/// Tokens in a text by the usual rule of thumb (4 bytes a token), at least
/// one for any non-empty text. Used only when the upstream never reported
/// usage (a cancelled stream, U4).
pub fn estimate_tokens(bytes: usize) -> u64 {
    bytes.div_ceil(4) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_usage_and_cached_tokens_from_json() {
        let body = include_bytes!("../../../tests/fixtures/openai/chat_completion.json");
        let u = usage_of_json(body).unwrap();
        assert_eq!(
            (u.input_tokens, u.cached_tokens, u.output_tokens),
            (1219, 1024, 10)
        );
        let e = include_bytes!("../../../tests/fixtures/openai/embeddings.json");
        assert_eq!(usage_of_json(e).unwrap().output_tokens, 0);
        assert_eq!(usage_of_json(b"{\"id\":1}"), None);
    }
}
