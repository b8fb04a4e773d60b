//! Notification routes (N1, N2; API.md "Notifications"): webhook endpoints
//! of a team (its Owner only: an Admin or Member gets 403, a non-member
//! 404, A3) or of the signed-in user's personal wallet, their delivery
//! logs, and low-balance thresholds. The endpoint secret is in the answer
//! of `POST` only.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, Body, CurrentUser};
use crate::accounts::TeamError;
use crate::money::{parse_amount, AmountRules, Nanos};
use crate::notify::{sign, EVENT_TYPES};
use crate::store::{DeliveryRecord, Role, WebhookRecord};
use crate::wallet::{team_wallet_id, user_wallet_id};
use crate::App;

/// Endpoints per team or user.
pub const MAX_WEBHOOKS: usize = 20;
/// Thresholds per wallet (API.md).
pub const MAX_THRESHOLDS: usize = 10;
/// Delivery log rows shown.
pub const MAX_LOG_ROWS: usize = 100;
const MAX_URL_LEN: usize = 2048;
const MAX_DESCRIPTION_LEN: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    url: String,
    events: Vec<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    thresholds: Vec<String>,
}

/// The endpoint owner of `team_id` for `user`: the Owner only.
async fn team_owner(app: &App, team_id: &str, user_id: &str) -> Result<String, ApiError> {
    let (_, role) = app.teams.role_of(team_id, user_id).await?;
    if role != Role::Owner {
        return Err(TeamError::Forbidden("only the owner manages notifications").into());
    }
    Ok(format!("team:{team_id}"))
}

fn invalid(code: &'static str, msg: &str) -> ApiError {
    ApiError::Invalid(code, msg.into())
}

fn webhook_json(w: &WebhookRecord) -> Value {
    json!({
        "id": w.id, "url": w.url, "events": w.events,
        "description": w.description, "created_at": w.created_at,
    })
}

fn delivery_json(d: &DeliveryRecord) -> Value {
    let last = d.attempts.last();
    json!({
        "id": d.id,
        "event_id": d.event_id,
        "type": d.kind,
        "attempt": d.attempts.len(),
        "status": d.status,
        "response_status": last.and_then(|a| a.response_status),
        "attempted_at": last.map(|a| a.at),
        "next_attempt_at": d.next_attempt_at,
        "attempts": d.attempts,
    })
}

/// N1: check and store a new endpoint of `owner`; the answer carries the
/// secret, the only time it is shown.
async fn create(app: &App, owner: String, body: NewWebhook) -> Result<Value, ApiError> {
    if body.url.len() > MAX_URL_LEN {
        return Err(invalid("invalid_url", "the URL is too long"));
    }
    app.notifier
        .client()
        .check_url(&body.url)
        .map_err(|e| invalid("invalid_url", e))?;
    if body.events.is_empty() {
        return Err(invalid("invalid_event", "name at least one event type"));
    }
    let mut events = Vec::with_capacity(body.events.len());
    for e in &body.events {
        if !EVENT_TYPES.contains(&e.as_str()) {
            return Err(invalid(
                "invalid_event",
                &format!("unknown event type `{e}`"),
            ));
        }
        if !events.contains(e) {
            events.push(e.clone());
        }
    }
    if body
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_LEN)
    {
        return Err(invalid("invalid_request", "the description is too long"));
    }
    if app.store.webhooks(&owner).await?.len() >= MAX_WEBHOOKS {
        return Err(invalid("too_many_webhooks", "at most 20 webhook endpoints"));
    }
    let w = WebhookRecord {
        id: crate::ids::new_id("wh"),
        owner,
        url: body.url,
        events,
        description: body.description,
        secret: sign::new_secret(),
        created_at: app.clock.now(),
    };
    app.store.put_webhook(&w).await?;
    let mut out = webhook_json(&w);
    out["secret"] = w.secret.clone().into();
    Ok(out)
}

/// The endpoint `id` if `owner` has it; 404 otherwise.
async fn owned(app: &App, owner: &str, id: &str) -> Result<WebhookRecord, ApiError> {
    app.store
        .webhook(id)
        .await?
        .filter(|w| w.owner == owner)
        .ok_or(ApiError::NotFound)
}

async fn list(app: &App, owner: &str) -> Result<Json<Value>, ApiError> {
    let all = app.store.webhooks(owner).await?;
    Ok(Json(Value::Array(all.iter().map(webhook_json).collect())))
}

async fn remove(app: &App, owner: &str, id: &str) -> Result<StatusCode, ApiError> {
    owned(app, owner, id).await?;
    app.store.delete_webhook(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn log(app: &App, owner: &str, id: &str) -> Result<Json<Value>, ApiError> {
    owned(app, owner, id).await?;
    let rows = app.store.deliveries(id, MAX_LOG_ROWS).await?;
    Ok(Json(Value::Array(rows.iter().map(delivery_json).collect())))
}

/// N2: parse thresholds (B7 amounts, above zero, at most 10), store them,
/// and hand them to the wallet's actor.
async fn set_alerts(app: &App, wallet_id: &str, body: Alerts) -> Result<Json<Value>, ApiError> {
    if body.thresholds.len() > MAX_THRESHOLDS {
        return Err(invalid("invalid_request", "at most 10 thresholds"));
    }
    let mut t: Vec<Nanos> = Vec::with_capacity(body.thresholds.len());
    for s in &body.thresholds {
        t.push(parse_amount(s, AmountRules::DEPOSIT)?);
    }
    t.sort_unstable();
    t.dedup();
    app.store.put_alerts(wallet_id, &t).await?;
    app.wallets.set_alerts(wallet_id, t.clone()).await;
    let change = crate::store::Change::Alerts(wallet_id.to_string());
    if let Err(e) = app.store.publish(&change).await {
        tracing::warn!(error = %e, "alert change not announced to other instances");
    }
    Ok(Json(json!({ "thresholds": t })))
}

type R<T> = Result<T, ApiError>;

pub async fn team_create(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path(team_id): Path<String>,
    Body(body): Body<NewWebhook>,
) -> R<(StatusCode, Json<Value>)> {
    let owner = team_owner(&app, &team_id, &user.id).await?;
    Ok((StatusCode::CREATED, Json(create(&app, owner, body).await?)))
}

pub async fn team_list(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path(team_id): Path<String>,
) -> R<Json<Value>> {
    list(&app, &team_owner(&app, &team_id, &user.id).await?).await
}

pub async fn team_delete(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path((team_id, id)): Path<(String, String)>,
) -> R<StatusCode> {
    remove(&app, &team_owner(&app, &team_id, &user.id).await?, &id).await
}

pub async fn team_deliveries(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path((team_id, id)): Path<(String, String)>,
) -> R<Json<Value>> {
    log(&app, &team_owner(&app, &team_id, &user.id).await?, &id).await
}

pub async fn team_alerts(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path(team_id): Path<String>,
    Body(body): Body<Alerts>,
) -> R<Json<Value>> {
    team_owner(&app, &team_id, &user.id).await?;
    set_alerts(&app, &team_wallet_id(&team_id), body).await
}

pub async fn me_create(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Body(body): Body<NewWebhook>,
) -> R<(StatusCode, Json<Value>)> {
    let owner = user_wallet_id(&user.id);
    Ok((StatusCode::CREATED, Json(create(&app, owner, body).await?)))
}

pub async fn me_list(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
) -> R<Json<Value>> {
    list(&app, &user_wallet_id(&user.id)).await
}

pub async fn me_delete(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> R<StatusCode> {
    remove(&app, &user_wallet_id(&user.id), &id).await
}

pub async fn me_deliveries(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> R<Json<Value>> {
    log(&app, &user_wallet_id(&user.id), &id).await
}

pub async fn me_alerts(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Body(body): Body<Alerts>,
) -> R<Json<Value>> {
    set_alerts(&app, &user_wallet_id(&user.id), body).await
}
