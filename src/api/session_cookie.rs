//! The browser's session (Dashboard, A3): the dashboard keeps the session
//! token in an `HttpOnly`, `SameSite=Strict` cookie `tollgate_session`,
//! which the management API accepts as it accepts `Authorization: Bearer`
//! (the header wins when both are sent). The cookie is set by
//! `POST /api/sessions` and cleared by `DELETE /api/sessions`. CSRF is
//! closed by `SameSite=Strict` plus JSON-only bodies (S3): a cross-site form
//! can neither carry the cookie nor send `application/json`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;

use super::ApiError;
use crate::App;

/// The cookie's name.
pub const NAME: &str = "tollgate_session";

/// The session token of a `Cookie` header, if one names `tollgate_session`.
pub fn from_headers(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == NAME)
        .map(|(_, value)| value.trim())
        .filter(|t| !t.is_empty())
}

/// `Secure` when the gateway's public URL is `https://`: a cookie marked so
/// over plain `http://` (local use, tests) would never be sent back.
fn secure(app: &App) -> &'static str {
    if app.config.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    }
}

/// The `Set-Cookie` value carrying `token` for `max_age_s` seconds.
pub fn set(app: &App, token: &str, max_age_s: i64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{NAME}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        max_age_s.max(0),
        secure(app)
    ))
    .ok()
}

/// The `Set-Cookie` value that makes the browser forget the session.
pub fn clear(app: &App) -> Option<HeaderValue> {
    set(app, "", 0)
}

/// `DELETE /api/sessions`: sign out. Ends the calling session (bearer or
/// cookie; 401 without one) and clears the cookie. 204.
pub async fn log_out(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let token = super::session_token(&headers).ok_or(ApiError::Unauthenticated)?;
    app.accounts.log_out(token).await?;
    let mut answer = StatusCode::NO_CONTENT.into_response();
    if let Some(v) = clear(&app) {
        answer.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(answer)
}
