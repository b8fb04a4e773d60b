//! Limits routes (Q1, Q2; API.md "Limits"): `PUT` a key's or a member's
//! limits, and the limits object every listing shows. The body is read
//! strictly here (a named field is set, `null` clears it, an unknown one
//! is refused); who may set what is decided in `accounts::limits`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Map, Value};

use super::{ApiError, Body, CurrentUser};
use crate::accounts::limits::{LimitsPatch, LimitsView};
use crate::money::{parse_amount, AmountError, AmountRules};
use crate::store::Period;
use crate::App;

/// The largest `rpm` / `tpm` (API.md): 10^9.
pub const MAX_RATE: u64 = 1_000_000_000;

/// The limits object of API.md.
pub fn limits_json(v: &LimitsView) -> Value {
    json!({
        "spend_limit": v.rec.spend_limit,
        "period": v.rec.period,
        "spent_in_period": v.spent_in_period,
        "resets_at": v.resets_at,
        "rpm": v.rec.rpm,
        "tpm": v.rec.tpm,
    })
}

/// Whether the body may name `rpm` / `tpm` (keys) or not (members).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fields {
    Key,
    Member,
}

fn invalid(code: &'static str, msg: &str) -> ApiError {
    ApiError::Invalid(code, msg.into())
}

/// A `PUT .../limits` body, checked whole before anything is changed.
fn parse_patch(body: &Map<String, Value>, fields: Fields) -> Result<LimitsPatch, ApiError> {
    let mut patch = LimitsPatch::default();
    for (name, value) in body {
        match (name.as_str(), value) {
            ("spend_limit", Value::Null) => patch.spend_limit = Some(None),
            ("spend_limit", Value::String(s)) => {
                patch.spend_limit = Some(Some(parse_amount(s, AmountRules::DEPOSIT)?));
            }
            ("spend_limit", _) => return Err(AmountError::NotADecimal.into()),
            ("period", Value::Null) => patch.period = Some(None),
            ("period", Value::String(s)) => {
                let p = Period::parse(s).ok_or_else(|| {
                    invalid("invalid_period", "period must be day, week, month or total")
                })?;
                patch.period = Some(Some(p));
            }
            ("period", _) => {
                return Err(invalid(
                    "invalid_period",
                    "period must be day, week, month or total",
                ))
            }
            ("rpm" | "tpm", v) if fields == Fields::Key => {
                let rate = match v {
                    Value::Null => None,
                    v => Some(rate(v)?),
                };
                if name == "rpm" {
                    patch.rpm = Some(rate);
                } else {
                    patch.tpm = Some(rate);
                }
            }
            _ => {
                return Err(invalid(
                    "invalid_request",
                    &format!("unknown field `{name}`"),
                ))
            }
        }
    }
    Ok(patch)
}

/// An `rpm` / `tpm`: a JSON integer from 1 to 10^9.
fn rate(v: &Value) -> Result<u32, ApiError> {
    v.as_u64()
        .filter(|n| (1..=MAX_RATE).contains(n))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            invalid(
                "invalid_rate",
                "rpm and tpm must be whole numbers from 1 to 1000000000",
            )
        })
}

/// `PUT /api/keys/{key_id}/limits`: the key's own user.
pub async fn put_key(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path(key_id): Path<String>,
    Body(body): Body<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let patch = parse_patch(&body, Fields::Key)?;
    let v = app
        .teams
        .set_personal_key_limits(&user.id, &key_id, patch)
        .await?;
    Ok(Json(limits_json(&v)))
}

/// `PUT /api/teams/{team_id}/keys/{key_id}/limits`: Owner, Admin.
pub async fn put_team_key(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path((team_id, key_id)): Path<(String, String)>,
    Body(body): Body<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let patch = parse_patch(&body, Fields::Key)?;
    let v = app
        .teams
        .set_team_key_limits(&team_id, &user.id, &key_id, patch)
        .await?;
    Ok(Json(limits_json(&v)))
}

/// `PUT /api/teams/{team_id}/members/{user_id}/limits`: the Owner for
/// anyone, an Admin for Members.
pub async fn put_member(
    State(app): State<Arc<App>>,
    CurrentUser(user): CurrentUser,
    Path((team_id, target)): Path<(String, String)>,
    Body(body): Body<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let patch = parse_patch(&body, Fields::Member)?;
    let v = app
        .teams
        .set_member_limits(&team_id, &user.id, &target, patch)
        .await?;
    Ok(Json(limits_json(&v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value, f: Fields) -> Result<LimitsPatch, ApiError> {
        parse_patch(v.as_object().unwrap(), f)
    }

    #[test]
    fn bodies_are_read_strictly() {
        let ok = parse(
            json!({"spend_limit": "1.5", "rpm": 10, "tpm": null}),
            Fields::Key,
        )
        .unwrap();
        assert_eq!(ok.rpm, Some(Some(10)));
        assert_eq!(ok.tpm, Some(None));
        assert_eq!(ok.period, None);
        for bad in [
            json!({"spend_limit": "0"}),
            json!({"spend_limit": "-1"}),
            json!({"spend_limit": 1.5}),
            json!({"spend_limit": "0.0000000001"}),
            json!({"spend_limit": "1000000001"}),
            json!({"period": "year"}),
            json!({"rpm": 0}),
            json!({"rpm": 1.0}),
            json!({"tpm": 1_000_000_001u64}),
            json!({"other": 1}),
        ] {
            assert!(parse(bad.clone(), Fields::Key).is_err(), "{bad}");
        }
        assert!(parse(json!({"rpm": 5}), Fields::Member).is_err());
    }
}
