//! Usage routes (U1-U3): per key, per team (by member, by key), a member's
//! own contribution, a user's personal usage. JSON by default,
//! `?format=csv` for spreadsheets. Visibility follows the role table; a
//! non-member gets 404. Each read first flushes the wallet it reads, so a
//! request is in the figures as soon as its response has ended (U1).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, CurrentUser};
use crate::accounts::rules;
use crate::store::{KeyScope, KeyStatus, Role, UsageRow};
use crate::teams::TeamError;
use crate::usage::{self, Stats, Window, DEFAULT_DAYS};
use crate::wallet::{team_wallet_id, user_wallet_id};
use crate::App;

#[derive(Deserialize)]
pub struct UsageQuery {
    days: Option<String>,
    format: Option<String>,
}

struct Ask {
    window: Window,
    csv: bool,
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

/// The wallet's rows in the window, after flushing what it has pending.
async fn rows(app: &App, wallet_id: &str, window: Window) -> Result<Vec<UsageRow>, ApiError> {
    let wallet = app.wallets.get(wallet_id).await?;
    wallet.flush().await?;
    Ok(app.store.usage_rows(wallet_id, window.first).await?)
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

/// `GET /api/keys/{key_id}/usage`: whoever may see the key.
pub async fn key(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path(key_id): Path<String>,
    Query(q): Query<UsageQuery>,
) -> Result<Response, ApiError> {
    let a = ask(&app, &q)?;
    let key = app.store.key(&key_id).await?.ok_or(ApiError::NotFound)?;
    let visible = match (&key.scope, &key.team_id) {
        (KeyScope::Personal, _) => key.created_by == user.id,
        (KeyScope::Team, Some(team_id)) => match app.teams.role_of(team_id, &user.id).await {
            Ok((_, role)) => rules::can_see_team_usage(role) || key.member_id == user.id,
            Err(TeamError::NotFound) => false,
            Err(e) => return Err(e.into()),
        },
        (KeyScope::Team, None) => false,
    };
    if !visible {
        return Err(ApiError::NotFound);
    }
    let rows = rows(&app, &key.wallet_id, a.window).await?;
    let mine = rows.iter().filter(|r| r.key_id == key.id);
    if a.csv {
        return Ok(csv_response(usage::csv(a.window, mine)));
    }
    let s = usage::stats(a.window, mine);
    Ok(Json(with_stats(
        json!({"key_id": key.id, "name": key.name, "status": key.status}),
        &s,
    ))
    .into_response())
}

/// `GET /api/teams/{team_id}/usage`: Owner and Admin.
pub async fn team(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path(team_id): Path<String>,
    Query(q): Query<UsageQuery>,
) -> Result<Response, ApiError> {
    let a = ask(&app, &q)?;
    let (_, role) = app.teams.role_of(&team_id, &user.id).await?;
    if !rules::can_see_team_usage(role) {
        return Err(ApiError::Forbidden(
            "only the owner and admins see the team's usage",
        ));
    }
    let rows = rows(&app, &team_wallet_id(&team_id), a.window).await?;
    if a.csv {
        return Ok(csv_response(usage::csv(a.window, &rows)));
    }
    let members = app.store.members(&team_id).await?;
    let mut by_member = Vec::new();
    for (user_id, s) in usage::grouped(a.window, &rows, |r| r.member_id.as_str()) {
        let email = app.store.user(user_id).await?.map(|u| u.email);
        let left = members
            .iter()
            .find(|m| m.user_id == user_id)
            .is_none_or(|m| !m.active());
        by_member.push(with_stats(
            json!({"user_id": user_id, "email": email, "left": left}),
            &s,
        ));
    }
    let mut by_key = Vec::new();
    for (key_id, s) in usage::grouped(a.window, &rows, |r| r.key_id.as_str()) {
        let key = app.store.key(key_id).await?;
        let name = key.as_ref().map(|k| k.name.clone());
        let status = key.map(|k| k.status).unwrap_or(KeyStatus::Deleted);
        by_key.push(with_stats(
            json!({"key_id": key_id, "name": name, "status": status}),
            &s,
        ));
    }
    Ok(Json(json!({
        "total": stats_json(&usage::stats(a.window, &rows)),
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
    Query(q): Query<UsageQuery>,
) -> Result<Response, ApiError> {
    let a = ask(&app, &q)?;
    app.teams.role_of(&team_id, &user.id).await?;
    let rows = rows(&app, &team_wallet_id(&team_id), a.window).await?;
    let mine = rows.iter().filter(|r| r.member_id == user.id);
    if a.csv {
        return Ok(csv_response(usage::csv(a.window, mine)));
    }
    Ok(Json(stats_json(&usage::stats(a.window, mine))).into_response())
}

/// `GET /api/me/usage`: personal keys, plus the contribution to each team.
pub async fn me(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Query(q): Query<UsageQuery>,
) -> Result<Response, ApiError> {
    let a = ask(&app, &q)?;
    let personal = rows(&app, &user_wallet_id(&user.id), a.window).await?;
    let mut team_rows = Vec::new();
    for m in app.store.memberships(&user.id).await? {
        let rs = rows(&app, &team_wallet_id(&m.team_id), a.window).await?;
        let mine: Vec<UsageRow> = rs.into_iter().filter(|r| r.member_id == user.id).collect();
        team_rows.push((m.team_id, m.role, mine));
    }
    if a.csv {
        let all = personal
            .iter()
            .chain(team_rows.iter().flat_map(|(_, _, rs)| rs.iter()));
        return Ok(csv_response(usage::csv(a.window, all)));
    }
    let teams: Vec<Value> = team_rows
        .iter()
        .map(|(team_id, role, rs): &(String, Role, Vec<UsageRow>)| {
            with_stats(
                json!({"team_id": team_id, "role": role}),
                &usage::stats(a.window, rs),
            )
        })
        .collect();
    let mut out = stats_json(&usage::stats(a.window, &personal));
    out["teams"] = Value::Array(teams);
    Ok(Json(out).into_response())
}
