//! Operator calls (A2): deposits with `Idempotency-Key` (B7), the
//! reconciliation report (B8), and reading any account.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse_json, ApiError, Body, Operator};
use crate::billing::{self, DepositKind};
use crate::ids::sha256_hex;
use crate::money::{parse_amount, AmountRules};
use crate::store::{Change, IdempotencyRecord};
use crate::wallet::user_wallet_id;
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
/// nothing; the same key with another body gets 409.
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

    let scope_key = format!("deposit:{idem}");
    let lock = app.locks.get(&scope_key);
    let _guard = lock.lock().await;
    let _forget = app.locks.forget_on_drop(&scope_key);
    if let Some(done) = app.store.idempotency(&scope_key).await? {
        if done.request_hash != request_hash {
            return Err(ApiError::Conflict(
                "idempotency_conflict",
                "this Idempotency-Key was used with another body".into(),
            ));
        }
        let body: Value = serde_json::from_str(&done.response).unwrap_or(Value::Null);
        let status = StatusCode::from_u16(done.status).unwrap_or(StatusCode::CREATED);
        return Ok((status, Json(body)).into_response());
    }

    let wallet_id = match (&body.user_id, &body.team_id) {
        (Some(user_id), None) => {
            app.store.user(user_id).await?.ok_or(ApiError::NotFound)?;
            user_wallet_id(user_id)
        }
        (None, Some(team_id)) => {
            if !body.kind.is_paid() {
                return Err(crate::teams::TeamError::PromoToTeam.into());
            }
            app.teams.deposit_target(team_id).await?
        }
        _ => {
            return Err(ApiError::Invalid(
                "invalid_target",
                "give exactly one of user_id and team_id".into(),
            ))
        }
    };
    let wallet = app.wallets.get(&wallet_id).await?;
    let credited = billing::deposit(&wallet, amount, body.kind, &reference, &scope_key).await?;
    // Other instances running this wallet re-read it (B3 across instances).
    if let Err(e) = app.store.publish(&Change::Wallet(wallet_id.clone())).await {
        tracing::warn!(error = %e, "deposit not announced to other instances");
    }
    let response = json!({
        "id": format!("dep:{}", sha256_hex(scope_key.as_bytes())),
        "wallet": wallet_id,
        "amount": amount,
        "kind": body.kind,
        "balance_after": credited.view.balance(),
    });
    app.store
        .put_idempotency(
            &scope_key,
            &IdempotencyRecord {
                request_hash,
                status: StatusCode::CREATED.as_u16(),
                response: response.to_string(),
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(response)).into_response())
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
    let user = app.store.user(&user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(super::users::account_view(&app, &user).await?))
}

/// I3: every message the mailer was given, delivered or not.
pub async fn outbox(State(app): State<Arc<App>>, _op: Operator) -> Result<Json<Value>, ApiError> {
    let messages = app.store.outbox().await?;
    Ok(Json(serde_json::to_value(messages).unwrap_or(Value::Null)))
}
