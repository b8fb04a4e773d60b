//! The management API (`/api/...`): users, sessions, keys, the operator's
//! deposits and reports. Handlers are thin: they authenticate, parse,
//! call the domain, and shape JSON. Errors become HTTP in error.rs only.

pub mod admin;
pub mod error;
pub mod limits;
pub mod session_cookie;
pub mod strict;
pub mod teams;
pub mod usage;
pub mod users;
pub mod webhooks;

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::routing::{delete, get, post, put};
use axum::Router;
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

pub use error::ApiError;

use crate::ids::sha256;
use crate::store::UserRecord;
use crate::App;

/// Management request bodies are small; anything bigger is refused (413).
pub const MAX_API_BODY: usize = 64 * 1024;

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/api/users", post(users::sign_up))
        .route(
            "/api/sessions",
            post(users::log_in).delete(session_cookie::log_out),
        )
        .route("/api/me", get(users::me))
        .route("/api/keys", post(users::create_key).get(users::list_keys))
        .route("/api/keys/{key_id}", delete(users::delete_key))
        .route("/api/keys/{key_id}/usage", get(usage::key))
        .route("/api/keys/{key_id}/limits", put(limits::put_key))
        .route(
            "/api/teams/{team_id}/keys/{key_id}/limits",
            put(limits::put_team_key),
        )
        .route(
            "/api/teams/{team_id}/members/{user_id}/limits",
            put(limits::put_member),
        )
        .route("/api/me/usage", get(usage::me))
        .route("/api/teams/{team_id}/usage", get(usage::team))
        .route("/api/teams/{team_id}/usage/me", get(usage::team_me))
        .route("/api/admin/deposits", post(admin::deposit))
        .route("/api/admin/reconcile", get(admin::reconcile))
        .route("/api/admin/users/{user_id}", get(admin::user))
        .route("/api/admin/outbox", get(admin::outbox))
        .route("/api/teams", post(teams::create))
        .route(
            "/api/teams/{team_id}",
            get(teams::get).delete(teams::delete),
        )
        .route("/api/teams/{team_id}/members", get(teams::members))
        .route(
            "/api/teams/{team_id}/members/{user_id}",
            axum::routing::patch(teams::change_role).delete(teams::remove_member),
        )
        .route(
            "/api/teams/{team_id}/invites",
            post(teams::invite).get(teams::invites),
        )
        .route(
            "/api/teams/{team_id}/invites/{invite_id}",
            delete(teams::revoke),
        )
        .route("/api/invites/{token}/accept", post(teams::accept))
        .route("/api/teams/{team_id}/ledger", get(teams::ledger))
        .route("/api/teams/{team_id}/events", get(teams::events))
        .route(
            "/api/teams/{team_id}/keys",
            post(teams::create_key).get(teams::keys),
        )
        .route(
            "/api/teams/{team_id}/keys/{key_id}",
            delete(teams::delete_key),
        )
        .merge(notification_routes())
}

/// N1, N2 (api/webhooks.rs).
fn notification_routes() -> Router<Arc<App>> {
    use webhooks as w;
    Router::new()
        .route(
            "/api/teams/{team_id}/webhooks",
            post(w::team_create).get(w::team_list),
        )
        .route(
            "/api/teams/{team_id}/webhooks/{webhook_id}",
            delete(w::team_delete),
        )
        .route(
            "/api/teams/{team_id}/webhooks/{webhook_id}/deliveries",
            get(w::team_deliveries),
        )
        .route("/api/teams/{team_id}/alerts", put(w::team_alerts))
        .route("/api/me/webhooks", post(w::me_create).get(w::me_list))
        .route("/api/me/webhooks/{webhook_id}", delete(w::me_delete))
        .route(
            "/api/me/webhooks/{webhook_id}/deliveries",
            get(w::me_deliveries),
        )
        .route("/api/me/alerts", put(w::me_alerts))
}

/// A JSON body, the one extractor of every management handler that takes
/// one: 415 unless sent as `application/json`, 400 when it is not JSON, 422
/// when an object repeats a member name (S3) or the JSON has the wrong shape
/// (an unknown field included: no mass assignment, A4), 413 when big.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        strict::check_content_type(req.headers())?;
        let bytes = match Limited::new(req.into_body(), MAX_API_BODY).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(ApiError::TooLarge),
            Err(_) => return Err(ApiError::BadJson("the body could not be read".into())),
        };
        strict::check_no_duplicates(&bytes)?;
        parse_json(&bytes).map(Body)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::Invalid("invalid_request", e.to_string()),
        _ => ApiError::BadJson(e.to_string()),
    })
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The session token of a request: `Authorization: Bearer`, else the
/// dashboard's `tollgate_session` cookie (session_cookie.rs).
pub fn session_token(headers: &HeaderMap) -> Option<&str> {
    bearer(headers).or_else(|| session_cookie::from_headers(headers))
}

/// The signed-in user (A1, A3): a valid, unexpired session token, from the
/// bearer header or the session cookie.
pub struct CurrentUser(pub UserRecord);

impl FromRequestParts<Arc<App>> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let token = session_token(&parts.headers).ok_or(ApiError::Unauthenticated)?;
        Ok(CurrentUser(app.accounts.authenticate(token).await?))
    }
}

/// The operator (A2): the configured token, compared in constant time.
/// With no token configured, every operator call is refused.
pub struct Operator;

impl FromRequestParts<Arc<App>> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let expected = app
            .config
            .operator_token
            .as_ref()
            .ok_or(ApiError::Unauthenticated)?;
        let given = bearer(&parts.headers).ok_or(ApiError::Unauthenticated)?;
        let equal: bool = sha256(given.as_bytes())
            .ct_eq(&sha256(expected.0.as_bytes()))
            .into();
        if equal {
            Ok(Operator)
        } else {
            Err(ApiError::Unauthenticated)
        }
    }
}
