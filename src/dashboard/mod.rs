//! The dashboard (API.md "Dashboard"): the web page for people, served at
//! `/` by the same binary. It owns only static files compiled into the
//! binary (static/: one HTML shell, plain ES modules, CSS, the vendored
//! uPlot); everything it shows it reads from the public management API
//! with `fetch`, signed in through the `tollgate_session` cookie
//! (api/session_cookie.rs). No templates, no server-side state: a page
//! cannot show what the API would not answer, and the role rules stay in
//! one place (accounts/rules.rs). README "Dashboard" argues the choice.
//!
//! Every answer carries a Content-Security-Policy without inline script
//! (`script-src 'self'`) and `Referrer-Policy: no-referrer` (the invite
//! page's path holds the invite token).

use std::sync::Arc;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::App;

/// The policy of every dashboard answer: nothing from elsewhere, no inline
/// script or style sheet, no framing, forms and fetches to this origin only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

const INDEX: &str = include_str!("../../static/index.html");

/// `(name under /assets/, content type, bytes, immutable)`.
const ASSETS: &[(&str, &str, &[u8], bool)] = &[
    (
        "app.css",
        CSS,
        include_bytes!("../../static/app.css"),
        false,
    ),
    (
        "js/app.js",
        JS,
        include_bytes!("../../static/js/app.js"),
        false,
    ),
    (
        "js/api.js",
        JS,
        include_bytes!("../../static/js/api.js"),
        false,
    ),
    (
        "js/ui.js",
        JS,
        include_bytes!("../../static/js/ui.js"),
        false,
    ),
    (
        "js/home.js",
        JS,
        include_bytes!("../../static/js/home.js"),
        false,
    ),
    (
        "js/team.js",
        JS,
        include_bytes!("../../static/js/team.js"),
        false,
    ),
    (
        "js/usage.js",
        JS,
        include_bytes!("../../static/js/usage.js"),
        false,
    ),
    (
        "js/chart.js",
        JS,
        include_bytes!("../../static/js/chart.js"),
        false,
    ),
    (
        "vendor/uplot-1.6.32/uPlot.iife.min.js",
        JS,
        include_bytes!("../../static/vendor/uplot-1.6.32/uPlot.iife.min.js"),
        true,
    ),
    (
        "vendor/uplot-1.6.32/uPlot.min.css",
        CSS,
        include_bytes!("../../static/vendor/uplot-1.6.32/uPlot.min.css"),
        true,
    ),
];

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// `GET /`, `GET /invites/{token}` (the emailed link opens the accept
/// view of the same page) and `GET /assets/...`.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(index))
        .route("/invites/{token}", get(index))
        .route("/assets/{*name}", get(asset))
}

async fn index() -> Response {
    page(
        "text/html; charset=utf-8",
        INDEX.as_bytes(),
        "no-cache",
        StatusCode::OK,
    )
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, ..)| *n == name) {
        // The vendored library's path names its version: cache it for good.
        Some((_, ty, bytes, true)) => page(
            ty,
            bytes,
            "public, max-age=31536000, immutable",
            StatusCode::OK,
        ),
        Some((_, ty, bytes, false)) => page(ty, bytes, "no-cache", StatusCode::OK),
        None => page(
            "text/plain; charset=utf-8",
            b"not found",
            "no-cache",
            StatusCode::NOT_FOUND,
        ),
    }
}

fn page(ty: &str, bytes: &'static [u8], cache: &'static str, status: StatusCode) -> Response {
    let mut r = (status, bytes).into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(ty) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}
