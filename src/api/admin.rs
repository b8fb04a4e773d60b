//! Operator calls (A2): deposits with `Idempotency-Key` (B7; the
//! idempotency itself is `billing::deposit_once`), the reconciliation
//! report (B8), reading any account, the mail outbox.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::{parse_json, ApiError, Body, Operator};
use crate::billing::{self, DepositKind, DepositRequest};
use crate::ids::sha256_hex;
use crate::money::{parse_amount, AmountRules};
use crate::App;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DepositBody {
    user_id: Option<String>,
    team_id: Option<String>,
    /// Kept raw: a JSON number must be refused, not rounded (B7).
    amount: Value,
    kind: DepositKind,
    #[serde(default)]
    reference: Option<String>,
}

/// B7. The same key and body answer the first result again and change
/// nothing; the same key with another body gets 409 (`billing::deposit_once`).
pub async fn deposit(
    State(app): State<Arc<App>>,
    _op: Operator,
    headers: HeaderMap,
    Body(raw): Body<Value>,
) -> Result<Response, ApiError> {
    let idem = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or(ApiError::MissingIdempotencyKey)?
        .to_string();
    // serde_json's map is ordered: equal bodies hash equal however spaced.
    let request_hash = sha256_hex(raw.to_string().as_bytes());
    let body: DepositBody = parse_json(raw.to_string().as_bytes())?;
    let amount = match &body.amount {
        Value::String(s) => parse_amount(s, AmountRules::DEPOSIT)?,
        _ => {
            return Err(ApiError::Invalid(
                "invalid_amount",
                "amount must be a decimal string such as \"12.50\"".into(),
            ))
        }
    };
    let reference = body.reference.unwrap_or_default();
    if reference.chars().count() > 256 {
        return Err(ApiError::Invalid(
            "invalid_reference",
            "reference may be at most 256 characters".into(),
        ));
    }

    let receipt = billing::deposit_once(
        &*app.store,
        &app.wallets,
        &app.teams,
        &app.locks,
        DepositRequest {
            idempotency_key: idem,
            request_hash,
            user_id: body.user_id,
            team_id: body.team_id,
            amount,
            kind: body.kind,
            reference,
        },
    )
    .await?;
    let status = StatusCode::from_u16(receipt.status).unwrap_or(StatusCode::CREATED);
    Ok((status, Json(receipt.body)).into_response())
}

pub async fn reconcile(
    State(app): State<Arc<App>>,
    _op: Operator,
) -> Result<Json<Value>, ApiError> {
    let r = billing::reconcile(&*app.store, &app.wallets).await?;
    Ok(Json(serde_json::to_value(r).unwrap_or(Value::Null)))
}

pub async fn user(
    State(app): State<Arc<App>>,
    _op: Operator,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = app.accounts.user(&user_id).await?;
    Ok(Json(super::users::account_view(&app, &user).await?))
}

/// I3: every message the mailer was given, delivered or not.
pub async fn outbox(State(app): State<Arc<App>>, _op: Operator) -> Result<Json<Value>, ApiError> {
    let messages = app.teams.mailer().outbox().await?;
    Ok(Json(serde_json::to_value(messages).unwrap_or(Value::Null)))
}
