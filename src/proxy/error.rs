//! Proxy errors: small `Copy` values that know whose fault they are and
//! render in the OpenAI error shape (P3), so OpenAI clients surface them.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use crate::auth::AuthError;
use crate::wallet::WalletError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("Incorrect or missing API key.")]
    InvalidKey,
    #[error("This API key is archived while its owner belongs to a team; use a team key.")]
    KeyArchived,
    #[error("Insufficient balance: add funds to resume.")]
    InsufficientBalance,
    #[error("The model is not available on this gateway.")]
    ModelNotFound,
    #[error("{0}")]
    InvalidRequest(&'static str),
    #[error("The request body is larger than this gateway accepts.")]
    TooLarge,
    #[error("The upstream failed to answer.")]
    Upstream,
    #[error("The upstream did not answer in time.")]
    UpstreamTimeout,
    #[error("The gateway cannot bill this request right now; retry shortly.")]
    Unavailable,
    /// Q1: a spend limit of the key or its member is reached until
    /// `resets_at` (never, for a `total` limit).
    #[error("{}", quota_message(*resets_at))]
    QuotaExceeded {
        resets_at: Option<DateTime<Utc>>,
        /// Seconds to the reset, for `retry-after` (none for `total`).
        retry_after_s: Option<u64>,
    },
    /// Q2: the key's rpm or tpm is used up for this minute.
    #[error("Rate limit reached for this API key; retry in {retry_after_s}s.")]
    RateLimited { retry_after_s: u64 },
}

fn quota_message(resets_at: Option<DateTime<Utc>>) -> String {
    match resets_at {
        Some(t) => format!(
            "Spend limit reached for this API key or its member; it resets at {}.",
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        None => "Spend limit reached for this API key or its member; a total limit does not reset."
            .into(),
    }
}

impl ProxyError {
    /// Q1 from the wallet's refusal, with the seconds left until `now`'s
    /// period resets.
    pub fn quota(resets_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> ProxyError {
        ProxyError::QuotaExceeded {
            resets_at,
            // Rounded up: a client that waits this long finds the reset.
            retry_after_s: resets_at.map(|t| {
                let ms = (t - now).num_milliseconds().max(1) as u64;
                ms.div_ceil(1000)
            }),
        }
    }

    /// `retry-after`, for the errors that have one.
    fn retry_after(self) -> Option<u64> {
        match self {
            ProxyError::QuotaExceeded { retry_after_s, .. } => retry_after_s,
            ProxyError::RateLimited { retry_after_s } => Some(retry_after_s),
            _ => None,
        }
    }
}

impl ProxyError {
    /// (status, OpenAI `type`, `code`): one exhaustive table.
    pub fn parts(self) -> (StatusCode, &'static str, &'static str) {
        use ProxyError::*;
        match self {
            InvalidKey => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
            ),
            KeyArchived => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "key_archived",
            ),
            InsufficientBalance => (
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_quota",
                "insufficient_balance",
            ),
            ModelNotFound => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "model_not_found",
            ),
            InvalidRequest(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
            ),
            TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
            ),
            Upstream => (StatusCode::BAD_GATEWAY, "upstream_error", "upstream_error"),
            UpstreamTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_error",
                "upstream_timeout",
            ),
            Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "service_unavailable",
            ),
            QuotaExceeded { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "insufficient_quota",
                "quota_exceeded",
            ),
            RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "requests", "rate_limited"),
        }
    }
}

impl From<AuthError> for ProxyError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing | AuthError::Unknown => ProxyError::InvalidKey,
            AuthError::Archived => ProxyError::KeyArchived,
            AuthError::Unavailable => ProxyError::Unavailable,
        }
    }
}

impl From<WalletError> for ProxyError {
    fn from(e: WalletError) -> Self {
        match e {
            WalletError::Insufficient => ProxyError::InsufficientBalance,
            // A closing wallet is a deleted team: its keys are dead (D1).
            WalletError::Closed => ProxyError::InvalidKey,
            WalletError::Unavailable | WalletError::OutOfRange => ProxyError::Unavailable,
            // Callers with a clock use `ProxyError::quota` (retry-after).
            WalletError::QuotaExceeded { resets_at } => ProxyError::QuotaExceeded {
                resets_at,
                retry_after_s: None,
            },
        }
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let (status, kind, code) = self.parts();
        let body = serde_json::json!({
            "error": {"message": self.to_string(), "type": kind, "param": null, "code": code}
        });
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after() {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        if let ProxyError::QuotaExceeded { retry_after_s, .. } = self {
            // OpenAI's SDKs retry a 429 after `retry-after` only up to a
            // minute, and otherwise back off blindly: a spend limit that
            // resets later (or never) tells them not to retry at all.
            if retry_after_s.is_none_or(|s| s > 60) {
                resp.headers_mut().insert(
                    axum::http::HeaderName::from_static("x-should-retry"),
                    axum::http::HeaderValue::from_static("false"),
                );
            }
        }
        resp
    }
}
