//! The `x-mock-*` request headers: parsed strictly (a malformed one is a
//! 400), and the ones that act before any body is chosen.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use crate::response::{error_response, json_response};

/// The body of an `x-mock-status` reply.
const MOCK_FAILURE_BODY: &str =
    r#"{"error":{"message":"mock failure","type":"server_error","code":null}}"#;

/// The header knobs of one request.
#[derive(Debug, Default)]
pub(crate) struct Knobs {
    pub(crate) status: Option<StatusCode>,
    pub(crate) delay: Option<Duration>,
    pub(crate) chunk_delay: Option<Duration>,
    pub(crate) fail_after_chunks: Option<u64>,
    pub(crate) prompt_tokens: Option<u64>,
    pub(crate) completion_tokens: Option<u64>,
    pub(crate) cached_tokens: Option<u64>,
}

impl Knobs {
    /// A malformed knob is an error, not ignored: a test with a typo in a
    /// knob should fail loudly rather than pass against default behaviour.
    pub(crate) fn parse(headers: &HeaderMap) -> Result<Self, String> {
        let number = |name: &str| -> Result<Option<u64>, String> {
            headers
                .get(name)
                .map(|value| {
                    value
                        .to_str()
                        .ok()
                        .and_then(|text| text.trim().parse::<u64>().ok())
                        .ok_or_else(|| format!("header {name} must be a non-negative integer"))
                })
                .transpose()
        };
        let millis = |name: &str| number(name).map(|ms| ms.map(Duration::from_millis));
        let status = number("x-mock-status")?
            .map(|code| {
                u16::try_from(code)
                    .ok()
                    .and_then(|code| StatusCode::from_u16(code).ok())
                    .ok_or_else(|| "header x-mock-status must be an HTTP status code".to_owned())
            })
            .transpose()?;
        Ok(Self {
            status,
            delay: millis("x-mock-delay-ms")?,
            chunk_delay: millis("x-mock-chunk-delay-ms")?,
            fail_after_chunks: number("x-mock-fail-after-chunks")?,
            prompt_tokens: number("x-mock-prompt-tokens")?,
            completion_tokens: number("x-mock-completion-tokens")?,
            cached_tokens: number("x-mock-cached-tokens")?,
        })
    }
}

/// The knobs that act before any body is chosen, in order: a malformed knob
/// (400), the delay, then a forced status. `None` means answer normally.
pub(crate) async fn knobs_before_reply(knobs: &Result<Knobs, String>) -> Option<Response> {
    let knobs = match knobs {
        Ok(knobs) => knobs,
        Err(message) => {
            return Some(error_response(
                StatusCode::BAD_REQUEST,
                message,
                "invalid_request_error",
            ))
        }
    };
    if let Some(delay) = knobs.delay {
        tokio::time::sleep(delay).await;
    }
    knobs.status.map(|status| {
        let mut response = json_response(Bytes::from_static(MOCK_FAILURE_BODY.as_bytes()));
        *response.status_mut() = status;
        response
    })
}
