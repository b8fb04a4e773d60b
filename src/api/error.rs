//! THE error -> HTTP table of the management API: every domain error maps
//! to a status and a stable `code` here, in exhaustive matches, so a new
//! variant does not compile until someone picks its status (A3).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::accounts::{AccountError, TeamError};
use crate::billing::DepositError;
use crate::money::AmountError;
use crate::store::StoreError;
use crate::wallet::WalletError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing, unknown or expired credentials")]
    Unauthenticated,
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("the request body is not valid JSON: {0}")]
    BadJson(String),
    #[error("the request body must be sent as application/json")]
    UnsupportedMediaType,
    #[error("the request body repeats a member name: {0}")]
    DuplicateMember(String),
    #[error("{1}")]
    Invalid(&'static str, String),
    #[error("the request body is too large")]
    TooLarge,
    #[error("the Idempotency-Key header is required")]
    MissingIdempotencyKey,
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error(transparent)]
    Amount(#[from] AmountError),
    #[error(transparent)]
    Wallet(#[from] WalletError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Team(#[from] TeamError),
    #[error(transparent)]
    Deposit(#[from] DepositError),
}

impl ApiError {
    pub fn parts(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::Unauthenticated => (S::UNAUTHORIZED, "unauthenticated"),
            ApiError::NotFound => (S::NOT_FOUND, "not_found"),
            ApiError::Forbidden(_) => (S::FORBIDDEN, "forbidden"),
            ApiError::BadJson(_) => (S::BAD_REQUEST, "invalid_json"),
            ApiError::UnsupportedMediaType => (S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::DuplicateMember(_) => (S::UNPROCESSABLE_ENTITY, "invalid_json"),
            ApiError::Invalid(code, _) => (S::UNPROCESSABLE_ENTITY, code),
            ApiError::TooLarge => (S::PAYLOAD_TOO_LARGE, "request_too_large"),
            ApiError::MissingIdempotencyKey => (S::BAD_REQUEST, "missing_idempotency_key"),
            ApiError::Account(e) => account_parts(e),
            ApiError::Amount(_) => (S::UNPROCESSABLE_ENTITY, "invalid_amount"),
            ApiError::Wallet(e) => wallet_parts(e),
            ApiError::Store(e) => store_parts(e),
            ApiError::Team(e) => team_parts(e),
            ApiError::Deposit(e) => deposit_parts(e),
        }
    }
}

fn account_parts(e: &AccountError) -> (StatusCode, &'static str) {
    use StatusCode as S;
    match e {
        AccountError::EmailTaken => (S::CONFLICT, "email_taken"),
        AccountError::InvalidEmail => (S::UNPROCESSABLE_ENTITY, "invalid_email"),
        AccountError::WeakPassword => (S::UNPROCESSABLE_ENTITY, "weak_password"),
        AccountError::BadCredentials => (S::UNAUTHORIZED, "invalid_credentials"),
        AccountError::Unauthenticated => (S::UNAUTHORIZED, "unauthenticated"),
        AccountError::InvalidName => (S::UNPROCESSABLE_ENTITY, "invalid_name"),
        AccountError::PersonalKeysArchived => (S::CONFLICT, "personal_keys_archived"),
        AccountError::NotFound => (S::NOT_FOUND, "not_found"),
        AccountError::Overloaded => (S::SERVICE_UNAVAILABLE, "overloaded"),
        AccountError::Throttled(_) => (S::TOO_MANY_REQUESTS, "rate_limited"),
        AccountError::Store(e) => store_parts(e),
    }
}

fn wallet_parts(e: &WalletError) -> (StatusCode, &'static str) {
    use StatusCode as S;
    match e {
        WalletError::Insufficient => (S::PAYMENT_REQUIRED, "insufficient_balance"),
        WalletError::Closed => (S::CONFLICT, "wallet_closed"),
        WalletError::Unavailable => (S::SERVICE_UNAVAILABLE, "unavailable"),
        WalletError::OutOfRange => (S::UNPROCESSABLE_ENTITY, "amount_out_of_range"),
        WalletError::QuotaExceeded { .. } => (S::TOO_MANY_REQUESTS, "quota_exceeded"),
    }
}

fn team_parts(e: &TeamError) -> (StatusCode, &'static str) {
    use StatusCode as S;
    match e {
        TeamError::NotFound => (S::NOT_FOUND, "not_found"),
        TeamError::Forbidden(_) => (S::FORBIDDEN, "forbidden"),
        TeamError::TeamLimit => (S::CONFLICT, "team_limit"),
        TeamError::InvalidName => (S::UNPROCESSABLE_ENTITY, "invalid_name"),
        TeamError::InvalidRole => (S::UNPROCESSABLE_ENTITY, "invalid_role"),
        TeamError::InvalidEmail => (S::UNPROCESSABLE_ENTITY, "invalid_email"),
        TeamError::AlreadyMember => (S::CONFLICT, "already_member"),
        TeamError::OwnerCannotLeave => (S::CONFLICT, "owner_cannot_leave"),
        TeamError::InviteGone => (S::GONE, "invite_gone"),
        TeamError::WrongInvitee => (S::FORBIDDEN, "wrong_invitee"),
        TeamError::InvalidMember => (S::UNPROCESSABLE_ENTITY, "invalid_member"),
        TeamError::Account(e) => account_parts(e),
        TeamError::Wallet(e) => wallet_parts(e),
        TeamError::Store(e) => store_parts(e),
    }
}

fn deposit_parts(e: &DepositError) -> (StatusCode, &'static str) {
    use StatusCode as S;
    match e {
        DepositError::IdempotencyConflict => (S::CONFLICT, "idempotency_conflict"),
        DepositError::InvalidTarget => (S::UNPROCESSABLE_ENTITY, "invalid_target"),
        DepositError::UnknownUser => (S::NOT_FOUND, "not_found"),
        DepositError::PromoToTeam => (S::UNPROCESSABLE_ENTITY, "invalid_kind"),
        DepositError::Team(e) => team_parts(e),
        DepositError::Wallet(e) => wallet_parts(e),
        DepositError::Store(e) => store_parts(e),
    }
}

fn store_parts(e: &StoreError) -> (StatusCode, &'static str) {
    match e {
        StoreError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        StoreError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        StoreError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        StoreError::Corrupt(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        StoreError::OutOfRange(_) => (StatusCode::UNPROCESSABLE_ENTITY, "amount_out_of_range"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let message = match (&self, status.is_server_error()) {
            // A full password queue is load, not a fault: say so plainly.
            (ApiError::Account(AccountError::Overloaded), _) => self.to_string(),
            // Internal details go to the log, not to the caller.
            (_, true) => {
                tracing::error!(error = %self, "management call failed");
                "the service is temporarily unavailable".to_string()
            }
            _ => self.to_string(),
        };
        crate::metrics::api_request(status.as_u16());
        let body = serde_json::json!({"error": {"code": code, "message": message}});
        let mut response = (status, axum::Json(body)).into_response();
        if let ApiError::Account(AccountError::Throttled(seconds)) = &self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(*seconds),
            );
        }
        response
    }
}
