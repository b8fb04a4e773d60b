//! Proxy errors: small `Copy` values that know whose fault they are and
//! render in the OpenAI error shape (P3), so OpenAI clients surface them.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

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
        }
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let (status, kind, code) = self.parts();
        let body = serde_json::json!({
            "error": {"message": self.to_string(), "type": kind, "param": null, "code": code}
        });
        (status, axum::Json(body)).into_response()
    }
}
