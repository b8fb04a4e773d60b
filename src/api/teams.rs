//! Team routes (T1-T4, I1-I5, L1-L3, K3, D1, B9): authenticate, parse,
//! call `accounts::Teams`, shape JSON. Every rule lives in the domain.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::limits::limits_json;
use super::users::{key_view, key_view_with_limits};
use super::{ApiError, Body, CurrentUser};
use crate::accounts::TeamError;
use crate::store::{InviteRecord, LedgerEntry, Role};
use crate::App;

/// Warning shown to the owner of a suspended team (B2).
pub const SUSPENDED_WARNING: &str =
    "The team balance is at or below the suspension threshold: team API keys are suspended. Add funds to resume.";

fn parse_role(role: &str) -> Result<Role, ApiError> {
    match role {
        "admin" => Ok(Role::Admin),
        "member" => Ok(Role::Member),
        _ => Err(TeamError::InvalidRole.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameBody {
    name: String,
}

pub async fn create(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Body(b): Body<NameBody>,
) -> Result<impl IntoResponse, ApiError> {
    let (team, _moved) = app.teams.create(&user, &b.name).await?;
    let view = app.teams.view(&team.id, &user.id).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": team.id,
            "name": team.name,
            "owner_id": team.owner_id,
            "balance": view.balance,
        })),
    ))
}

pub async fn get(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path(team_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let v = app.teams.view(&team_id, &user.id).await?;
    let mut out = json!({
        "id": v.team.id,
        "name": v.team.name,
        "owner_id": v.team.owner_id,
        "role": v.role,
        "suspended": v.suspended,
        "member_count": v.member_count,
        "created_at": v.team.created_at,
    });
    if let Some(balance) = v.balance {
        out["balance"] = json!(balance);
        if v.suspended {
            out["warning"] = json!(SUSPENDED_WARNING);
        }
    }
    Ok(Json(out))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path(team_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let refunded = app.teams.delete(&team_id, &user.id).await?;
    Ok(Json(json!({"refunded": refunded})))
}

pub async fn members(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path(team_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let members = app.teams.members(&team_id, &user.id).await?;
    let (_, role) = app.teams.role_of(&team_id, &user.id).await?;
    let rows = app
        .teams
        .limit_rows(&crate::wallet::team_wallet_id(&team_id))
        .await?;
    let mut out = Vec::with_capacity(members.len());
    for (m, email) in members {
        let mut v =
            json!({"user_id": m.user_id, "email": email, "role": m.role, "joined_at": m.joined_at});
        // Q1: Owner and Admin see everyone's limits, a Member their own.
        if role != Role::Member || m.user_id == user.id {
            let l = app.teams.member_limits(&team_id, &m.user_id, &rows).await?;
            v["limits"] = limits_json(&l);
        }
        out.push(v);
    }
    Ok(Json(Value::Array(out)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    role: String,
}

pub async fn change_role(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path((team_id, target)): Path<(String, String)>,
    Body(b): Body<RoleBody>,
) -> Result<Json<Value>, ApiError> {
    let role = parse_role(&b.role)?;
    let m = app
        .teams
        .change_role(&team_id, &user.id, &target, role)
        .await?;
    Ok(Json(json!({"user_id": m.user_id, "role": m.role})))
}

pub async fn remove_member(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path((team_id, target)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    app.teams.remove(&team_id, &user.id, &target).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteBody {
    email: String,
    #[serde(default = "default_role")]
    role: String,
}

fn default_role() -> String {
    "member".into()
}

fn invite_view(i: &InviteRecord) -> Value {
    json!({
        "id": i.id,
        "email": i.email,
        "role": i.role,
        "status": i.status,
        "invited_by": i.invited_by,
        "created_at": i.created_at,
        "expires_at": i.expires_at,
    })
}

pub async fn invite(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path(team_id): Path<String>,
    Body(b): Body<InviteBody>,
) -> Result<impl IntoResponse, ApiError> {
    let role = parse_role(&b.role)?;
    let (invite, link) = app.teams.invite(&team_id, &user.id, &b.email, role).await?;
    let mut v = invite_view(&invite);
    v["accept_url"] = json!(link);
    Ok((StatusCode::CREATED, Json(v)))
}

pub async fn invites(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path(team_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let list = app.teams.invites(&team_id, &user.id).await?;
    Ok(Json(Value::Array(list.iter().map(invite_view).collect())))
}

pub async fn revoke(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path((team_id, invite_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    app.teams.revoke(&team_id, &user.id, &invite_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn accept(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path(token): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (team_id, role) = app.teams.accept(&user, &token).await?;
    Ok(Json(json!({"team_id": team_id, "role": role})))
}

pub fn entry_view(e: &LedgerEntry) -> Value {
    let mut v = json!({
        "id": e.id,
        "kind": e.kind,
        "amount": e.amount(),
        "paid": e.paid,
        "promo": e.promo,
        "at": e.at,
        "reference": e.reference,
    });
    if let Some(u) = &e.usage {
        v["key_id"] = json!(u.key_id);
        v["member_id"] = json!(u.member_id);
        v["model"] = json!(u.model);
        v["input_tokens"] = json!(u.usage.input_tokens);
        v["cached_tokens"] = json!(u.usage.cached_tokens);
        v["output_tokens"] = json!(u.usage.output_tokens);
    }
    v
}

pub async fn ledger(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path(team_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let entries = app.teams.ledger(&team_id, &user.id).await?;
    Ok(Json(Value::Array(entries.iter().map(entry_view).collect())))
}

pub async fn events(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path(team_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let events = app.teams.events(&team_id, &user.id).await?;
    Ok(Json(serde_json::to_value(events).unwrap_or(Value::Null)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamKeyBody {
    name: String,
    #[serde(default)]
    member_id: Option<String>,
}

pub async fn create_key(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path(team_id): Path<String>,
    Body(b): Body<TeamKeyBody>,
) -> Result<impl IntoResponse, ApiError> {
    let (record, minted) = app
        .teams
        .create_key(&team_id, &user.id, &b.name, b.member_id.as_deref())
        .await?;
    let mut v = key_view(&record);
    v["key"] = Value::String(minted.secret);
    Ok((StatusCode::CREATED, Json(v)))
}

pub async fn keys(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path(team_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let keys = app.teams.keys(&team_id, &user.id).await?;
    let limits = app.teams.team_key_limits(&team_id, &keys).await?;
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
    Path((team_id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    app.teams.delete_key(&team_id, &user.id, &key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
