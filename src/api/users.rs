//! Users, sessions, the signed-in user's view and personal keys (A1, A3,
//! K1, K2, K4, K5).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::limits::limits_json;
use super::{ApiError, Body, CurrentUser};
use crate::accounts::limits::LimitsView;
use crate::store::{KeyRecord, UserRecord};
use crate::App;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    email: String,
    password: String,
}

pub async fn sign_up(
    State(app): State<Arc<App>>,
    Body(c): Body<Credentials>,
) -> Result<impl IntoResponse, ApiError> {
    let user = app.accounts.sign_up(&c.email, &c.password).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": user.id, "email": user.email})),
    ))
}

/// The client's address, where the listener knows it (`ConnectInfo`,
/// set by `connections`); S1 throttles failed logins by it. A proxy in
/// front makes every client one address: its `X-Forwarded-For` is not
/// trusted (anyone can write one).
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

pub async fn log_in(
    State(app): State<Arc<App>>,
    ClientAddr(addr): ClientAddr,
    Body(c): Body<Credentials>,
) -> Result<impl IntoResponse, ApiError> {
    let (token, expires_at) = app.accounts.log_in(&c.email, &c.password, addr).await?;
    // The dashboard's cookie too (session_cookie.rs); the JSON is unchanged.
    let max_age = (expires_at - app.clock.now()).num_seconds();
    let cookie = super::session_cookie::set(&app, &token, max_age);
    let mut answer = (
        StatusCode::CREATED,
        Json(json!({"token": token, "expires_at": expires_at})),
    )
        .into_response();
    if let Some(v) = cookie {
        answer
            .headers_mut()
            .insert(axum::http::header::SET_COOKIE, v);
    }
    Ok(answer)
}

pub async fn me(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(account_view(&app, &user).await?))
}

/// `GET /api/me` and the operator's view of a user.
pub async fn account_view(app: &App, user: &UserRecord) -> Result<Value, ApiError> {
    let a = app.teams.account(&user.id).await?;
    let mut teams: Vec<Value> = Vec::with_capacity(a.teams.len());
    for (t, role) in &a.teams {
        // Q1: the user's own member limits in each team.
        let limits = app.teams.own_member_limits(&t.id, &user.id).await?;
        teams.push(
            json!({"id": t.id, "name": t.name, "role": role, "limits": limits_json(&limits)}),
        );
    }
    Ok(json!({
        "id": user.id,
        "email": user.email,
        "balance": {"paid": a.wallet.paid, "promo": a.wallet.promo},
        "suspended": a.wallet.suspended,
        "owned_team_id": a.owned_team_id,
        "teams": teams,
    }))
}

/// K1: what listings show of a key; never the secret or its hash.
pub fn key_view(k: &KeyRecord) -> Value {
    json!({
        "id": k.id,
        "prefix": k.prefix,
        "name": k.name,
        "status": k.status,
        "scope": k.scope,
        "created_by": k.created_by,
        "member_id": k.member_id,
        "team_id": k.team_id,
        "created_at": k.created_at,
        "last_used_at": k.last_used_at,
    })
}

/// A key in a listing, with its limits object (Q1, Q2).
pub fn key_view_with_limits(k: &KeyRecord, limits: &LimitsView) -> Value {
    let mut v = key_view(k);
    v["limits"] = limits_json(limits);
    v
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    name: String,
}

pub async fn create_key(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Body(b): Body<NewKeyBody>,
) -> Result<impl IntoResponse, ApiError> {
    let (record, minted) = app
        .accounts
        .create_personal_key(&user, &b.name, &app.teams, &app.keys)
        .await?;
    let mut view = key_view(&record);
    view["key"] = Value::String(minted.secret);
    Ok((StatusCode::CREATED, Json(view)))
}

pub async fn list_keys(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Value>, ApiError> {
    let keys = app.accounts.personal_keys(&user).await?;
    let limits = app.teams.personal_key_limits(&user.id, &keys).await?;
    Ok(Json(Value::Array(
        keys.iter()
            .zip(&limits)
            .map(|(k, l)| key_view_with_limits(k, l))
            .collect(),
    )))
}

pub async fn delete_key(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path(key_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.accounts
        .delete_personal_key(&user, &key_id, &app.teams, &app.keys)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
