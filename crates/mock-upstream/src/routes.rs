//! The axum handlers: the billed routes hand over to `MockUpstream::billed`;
//! models, the control route and the fallbacks answer here.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;

use crate::exchange::Endpoint;
use crate::knobs::{knobs_before_reply, Knobs};
use crate::mock::MockUpstream;
use crate::response::{error_response, json_or_null, json_response};

/// What `GET /v1/models` answers.
const MODELS_BODY: &str = concat!(
    r#"{"object":"list","data":["#,
    r#"{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"mock"},"#,
    r#"{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"mock"},"#,
    r#"{"id":"gpt-3.5-turbo-instruct","object":"model","created":1692901427,"owned_by":"mock"},"#,
    r#"{"id":"text-embedding-3-small","object":"model","created":1705948997,"owned_by":"mock"}"#,
    r#"]}"#
);

/// What the handlers read of a request: its method, path, headers and raw
/// body (the body under the router's `DefaultBodyLimit`, as `Bytes` reads it).
pub(crate) struct Incoming {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for Incoming {
    type Rejection = BytesRejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let method = request.method().clone();
        let uri = request.uri().clone();
        let headers = request.headers().clone();
        let body = Bytes::from_request(request, state).await?;
        Ok(Self {
            method,
            uri,
            headers,
            body,
        })
    }
}

impl Incoming {
    /// Records the request as it came, its body parsed when it is JSON.
    fn record_in(&self, mock: &MockUpstream) {
        mock.record(
            &self.method,
            &self.uri,
            &self.headers,
            json_or_null(&self.body),
        );
    }
}

pub(crate) async fn chat_completions(
    State(mock): State<MockUpstream>,
    incoming: Incoming,
) -> Response {
    mock.billed(Endpoint::Chat, incoming).await
}

pub(crate) async fn completions(State(mock): State<MockUpstream>, incoming: Incoming) -> Response {
    mock.billed(Endpoint::Completions, incoming).await
}

pub(crate) async fn embeddings(State(mock): State<MockUpstream>, incoming: Incoming) -> Response {
    mock.billed(Endpoint::Embeddings, incoming).await
}

pub(crate) async fn models(State(mock): State<MockUpstream>, incoming: Incoming) -> Response {
    let knobs = Knobs::parse(&incoming.headers);
    incoming.record_in(&mock);
    if let Some(early) = knobs_before_reply(&knobs).await {
        return early;
    }
    json_response(Bytes::from_static(MODELS_BODY.as_bytes()))
}

/// Control route for out-of-process tests; deliberately not recorded.
pub(crate) async fn recorded_requests(State(mock): State<MockUpstream>) -> Response {
    match serde_json::to_vec(&*mock.lock_recorded()) {
        Ok(body) => json_response(Bytes::from(body)),
        Err(err) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("could not encode the recorded requests: {err}"),
            "server_error",
        ),
    }
}

pub(crate) async fn unrouted(State(mock): State<MockUpstream>, incoming: Incoming) -> Response {
    let path = incoming.uri.path();
    let message = format!("mock upstream has no route {} {path}", incoming.method);
    incoming.record_in(&mock);
    error_response(StatusCode::NOT_FOUND, &message, "invalid_request_error")
}

pub(crate) async fn wrong_method(State(mock): State<MockUpstream>, incoming: Incoming) -> Response {
    let path = incoming.uri.path();
    let message = format!("mock upstream does not allow {} {path}", incoming.method);
    incoming.record_in(&mock);
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &message,
        "invalid_request_error",
    )
}
