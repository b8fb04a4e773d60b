//! Small response builders shared by the routes: JSON, the `OpenAI` error
//! shape, and the clock the `created` fields read.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

pub(crate) fn json_response(body: impl Into<Bytes>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.into(),
    )
        .into_response()
}

/// The `OpenAI` error shape: `{"error":{"message","type","code"}}`.
pub(crate) fn error_response(status: StatusCode, message: &str, kind: &str) -> Response {
    let body = serde_json::json!({
        "error": { "message": message, "type": kind, "code": null }
    });
    (status, axum::Json(body)).into_response()
}

pub(crate) fn json_or_null(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}
