//! Usage routes (U1-U3): per key, per team (by member, by key), a member's
//! own contribution, a user's personal usage. JSON by default,
//! `?format=csv` for spreadsheets. Who sees what (and the flush before
//! each read) is decided in `accounts::reports`; here the query is parsed
//! and the answer shaped.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::limits::limits_json;
use super::{ApiError, CurrentUser};
use crate::store::{Role, UsageRow};
use crate::usage::{self, Stats, Window, DEFAULT_DAYS};
use crate::App;

#[derive(Deserialize)]
pub struct UsageQuery {
    days: Option<String>,
    format: Option<String>,
}

/// The window and format of a usage read, from `?days=&format=`; an
/// extractor, so each handler gets it checked (after the caller and the
/// path, as the handlers list them).
pub struct Ask {
    window: Window,
    csv: bool,
}

impl FromRequestParts<Arc<App>> for Ask {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        let Query(q) = Query::<UsageQuery>::from_request_parts(parts, app)
            .await
            .map_err(IntoResponse::into_response)?;
        ask(app, &q).map_err(IntoResponse::into_response)
    }
}

fn ask(app: &App, q: &UsageQuery) -> Result<Ask, ApiError> {
    let days = match &q.days {
        None => DEFAULT_DAYS,
        Some(s) => s.parse::<u32>().map_err(|_| bad_days())?,
    };
    let window = Window::last_days(app.clock.now().date_naive(), days).ok_or_else(bad_days)?;
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            return Err(ApiError::Invalid(
                "invalid_format",
                "format must be json or csv".into(),
            ))
        }
    };
    Ok(Ask { window, csv })
}

fn bad_days() -> ApiError {
    ApiError::Invalid(
        "invalid_days",
        "days must be a whole number from 1 to 90".into(),
    )
}

fn stats_json(s: &Stats) -> Value {
    serde_json::to_value(s).unwrap_or(Value::Null)
}

/// `{extra..., ...stats}` flattened, as API.md's lists show them.
fn with_stats(mut extra: Value, s: &Stats) -> Value {
    if let (Some(o), Value::Object(st)) = (extra.as_object_mut(), stats_json(s)) {
        o.extend(st);
    }
    extra
}

fn csv_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
}

/// The rows as CSV, or as the JSON `json` makes of their stats.
fn answer(a: &Ask, rows: &[UsageRow], json: impl FnOnce(&Stats) -> Value) -> Response {
    if a.csv {
        return csv_response(usage::csv(a.window, rows));
    }
    Json(json(&usage::stats(a.window, rows))).into_response()
}

/// `GET /api/keys/{key_id}/usage`: whoever may see the key.
pub async fn key(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path(key_id): Path<String>,
    a: Ask,
) -> Result<Response, ApiError> {
    let (key, rows) = app.teams.key_usage(&user.id, &key_id, a.window).await?;
    let all = app.teams.limit_rows(&key.wallet_id).await?;
    let limits = limits_json(&app.teams.key_limits(&key, &all).await?);
    Ok(answer(&a, &rows, |s| {
        with_stats(
            json!({"key_id": key.id, "name": key.name, "status": key.status, "limits": limits}),
            s,
        )
    }))
}

/// `GET /api/teams/{team_id}/usage`: Owner and Admin.
pub async fn team(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path(team_id): Path<String>,
    a: Ask,
) -> Result<Response, ApiError> {
    if a.csv {
        let rows = app
            .teams
            .team_usage_rows(&team_id, &user.id, a.window)
            .await?;
        return Ok(csv_response(usage::csv(a.window, &rows)));
    }
    let u = app.teams.team_usage(&team_id, &user.id, a.window).await?;
    let all = app
        .teams
        .limit_rows(&crate::wallet::team_wallet_id(&team_id))
        .await?;
    let mut by_member: Vec<Value> = Vec::with_capacity(u.by_member.len());
    for m in &u.by_member {
        let l = app.teams.member_limits(&team_id, &m.user_id, &all).await?;
        by_member.push(with_stats(
            json!({"user_id": m.user_id, "email": m.email, "left": m.left, "limits": limits_json(&l)}),
            &m.stats,
        ));
    }
    let mut by_key: Vec<Value> = Vec::with_capacity(u.by_key.len());
    for k in &u.by_key {
        let l = app.teams.key_limits_by_id(&k.key_id, &all).await?;
        by_key.push(with_stats(
            json!({"key_id": k.key_id, "name": k.name, "status": k.status, "limits": limits_json(&l)}),
            &k.stats,
        ));
    }
    Ok(Json(json!({
        "total": stats_json(&u.total),
        "by_member": by_member,
        "by_key": by_key,
    }))
    .into_response())
}

/// `GET /api/teams/{team_id}/usage/me`: any member, their own contribution.
pub async fn team_me(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path(team_id): Path<String>,
    a: Ask,
) -> Result<Response, ApiError> {
    let rows = app.teams.member_usage(&team_id, &user.id, a.window).await?;
    Ok(answer(&a, &rows, stats_json))
}

/// `GET /api/me/usage`: personal keys, plus the contribution to each team.
pub async fn me(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    a: Ask,
) -> Result<Response, ApiError> {
    let u = app.teams.my_usage(&user.id, a.window).await?;
    if a.csv {
        let all = u
            .personal
            .iter()
            .chain(u.teams.iter().flat_map(|(_, _, rs)| rs.iter()));
        return Ok(csv_response(usage::csv(a.window, all)));
    }
    let teams: Vec<Value> = u
        .teams
        .iter()
        .map(|(team_id, role, rs): &(String, Role, Vec<UsageRow>)| {
            with_stats(
                json!({"team_id": team_id, "role": role}),
                &usage::stats(a.window, rs),
            )
        })
        .collect();
    let mut out = stats_json(&usage::stats(a.window, &u.personal));
    out["teams"] = Value::Array(teams);
    Ok(Json(out).into_response())
}
