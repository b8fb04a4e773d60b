//! Non-streamed bodies, in the shapes of the fixtures: chat completion,
//! text completion and the embedding list.

use serde::Serialize;

use crate::exchange::{Endpoint, Exchange, Usage};

pub(crate) const FINGERPRINT: &str = "fp_mock";
/// Every embedding is this vector: small, fixed, and easy to assert on.
const EMBEDDING: [f32; 8] = [
    0.0023064255,
    -0.009327292,
    -0.0028842222,
    0.015_625,
    -0.03125,
    0.0625,
    -0.125,
    0.25,
];

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChatChoice<'a>; 1],
    usage: &'a Usage,
    service_tier: &'static str,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: ChatMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
    annotations: [(); 0],
}

#[derive(Serialize)]
struct TextCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: [TextChoice<'a>; 1],
    /// `Option<Option<_>>`: absent, `null`, or the usage object, as streams need.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<&'a Usage>>,
}

#[derive(Serialize)]
pub(crate) struct TextChoice<'a> {
    pub(crate) text: &'a str,
    pub(crate) index: u32,
    pub(crate) logprobs: Option<()>,
    pub(crate) finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    embedding: &'static [f32],
    index: usize,
}

/// Embeddings report prompt tokens only, like the fixture.
#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

pub(crate) fn completion_body(
    exchange: &Exchange,
    id: u64,
    created: u64,
) -> serde_json::Result<Vec<u8>> {
    let text = exchange.completion_text();
    match exchange.endpoint {
        Endpoint::Chat => serde_json::to_vec(&ChatCompletion {
            id: &format!("chatcmpl-mock-{id}"),
            object: "chat.completion",
            created,
            model: &exchange.model,
            choices: [ChatChoice {
                index: 0,
                message: ChatMessage {
                    role: "assistant",
                    content: &text,
                    refusal: None,
                    annotations: [],
                },
                logprobs: None,
                finish_reason: "stop",
            }],
            usage: &exchange.usage,
            service_tier: "default",
            system_fingerprint: FINGERPRINT,
        }),
        Endpoint::Completions | Endpoint::Embeddings => serde_json::to_vec(&TextCompletion {
            id: &format!("cmpl-mock-{id}"),
            object: "text_completion",
            created,
            model: &exchange.model,
            system_fingerprint: FINGERPRINT,
            choices: [TextChoice {
                text: &text,
                index: 0,
                logprobs: None,
                finish_reason: Some("stop"),
            }],
            usage: Some(Some(&exchange.usage)),
        }),
    }
}

pub(crate) fn embeddings_body(exchange: &Exchange) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&EmbeddingList {
        object: "list",
        data: (0..exchange.inputs)
            .map(|index| Embedding {
                object: "embedding",
                embedding: &EMBEDDING,
                index,
            })
            .collect(),
        model: &exchange.model,
        usage: EmbeddingUsage {
            prompt_tokens: exchange.usage.prompt_tokens,
            total_tokens: exchange.usage.prompt_tokens,
        },
    })
}
