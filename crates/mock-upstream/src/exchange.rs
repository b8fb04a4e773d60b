//! What one request asks for, read from its body and its knobs: the
//! endpoint, the model, the usage to report (the accounting rules of the
//! crate header) and how to stream it.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::knobs::Knobs;

const DEFAULT_COMPLETION_TOKENS: u64 = 16;
/// A completion is materialised in memory, so a bogus `max_tokens` must not
/// be able to allocate gigabytes.
const MAX_COMPLETION_TOKENS: u64 = 1_000_000;
/// One completion token: exactly 4 bytes, so text length = 4 x tokens.
pub(crate) const TOKEN_TEXT: &str = "tok ";
const DEFAULT_MODEL: &str = "mock-model";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Completions,
    Embeddings,
}

/// Everything the reply needs, read from the request body and the knobs.
pub(crate) struct Exchange {
    pub(crate) endpoint: Endpoint,
    pub(crate) model: String,
    pub(crate) usage: Usage,
    /// Embeddings only: how many vectors to return.
    pub(crate) inputs: usize,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    pub(crate) chunk_delay: Option<Duration>,
    pub(crate) fail_after_chunks: Option<u64>,
}

impl Exchange {
    pub(crate) fn read(endpoint: Endpoint, request: &Value, knobs: &Knobs) -> Self {
        let prompt_bytes = match endpoint {
            Endpoint::Chat => {
                request
                    .get("messages")
                    .and_then(Value::as_array)
                    .map_or(0, |messages| {
                        messages
                            .iter()
                            .map(|message| text_bytes(message.get("content")))
                            .sum()
                    })
            }
            Endpoint::Completions => text_bytes(request.get("prompt")),
            Endpoint::Embeddings => text_bytes(request.get("input")),
        };
        let counted_prompt = u64::try_from(prompt_bytes.div_ceil(4))
            .unwrap_or(u64::MAX)
            .max(1);
        let prompt_tokens = knobs.prompt_tokens.unwrap_or(counted_prompt);
        let completion_tokens = match endpoint {
            Endpoint::Embeddings => 0,
            Endpoint::Chat | Endpoint::Completions => knobs
                .completion_tokens
                .or_else(|| request.get("max_completion_tokens").and_then(Value::as_u64))
                .or_else(|| request.get("max_tokens").and_then(Value::as_u64))
                .unwrap_or(DEFAULT_COMPLETION_TOKENS)
                .min(MAX_COMPLETION_TOKENS),
        };
        let cached_tokens = knobs.cached_tokens.unwrap_or(0).min(prompt_tokens);
        let flag = |pointer: &str| {
            request
                .pointer(pointer)
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        Self {
            endpoint,
            model: request
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or(DEFAULT_MODEL)
                .to_owned(),
            usage: Usage::new(prompt_tokens, completion_tokens, cached_tokens),
            inputs: input_count(request.get("input")),
            stream: endpoint != Endpoint::Embeddings && flag("/stream"),
            include_usage: flag("/stream_options/include_usage"),
            chunk_delay: knobs.chunk_delay,
            fail_after_chunks: knobs.fail_after_chunks,
        }
    }

    pub(crate) fn completion_text(&self) -> String {
        // Within MAX_COMPLETION_TOKENS, so the conversion cannot fail.
        TOKEN_TEXT.repeat(usize::try_from(self.usage.completion_tokens).unwrap_or(0))
    }
}

/// Bytes of prompt text in a string, or in an array of strings and/or
/// content parts (`{"type":"text","text":...}`); anything else counts 0.
fn text_bytes(value: Option<&Value>) -> usize {
    match value {
        Some(Value::String(text)) => text.len(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => text.len(),
                Value::Object(part) => part.get("text").and_then(Value::as_str).map_or(0, str::len),
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

/// Embedding inputs: a string or one token array is one input; an array of
/// strings (or of token arrays) is one input per element.
fn input_count(input: Option<&Value>) -> usize {
    match input {
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_number) => 1,
        Some(Value::Array(items)) => items.len(),
        _ => 1,
    }
}

#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct Usage {
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptTokensDetails,
    completion_tokens_details: CompletionTokensDetails,
}

#[derive(Clone, Copy, Debug, Serialize)]
struct PromptTokensDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
struct CompletionTokensDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

impl Usage {
    fn new(prompt_tokens: u64, completion_tokens: u64, cached_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens,
                audio_tokens: 0,
            },
            completion_tokens_details: CompletionTokensDetails::default(),
        }
    }
}
