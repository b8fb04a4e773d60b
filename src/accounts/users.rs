//! Users and sessions: sign-up, login, session lookup, personal keys
//! (minted by `auth::keys`, the same path as team keys).

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use chrono::{DateTime, Utc};

use crate::clock::Clock;
use rand::rngs::OsRng;

use super::password_pool::{Memory, PasswordPool, PoolError};
use super::throttle::LoginThrottle;
use super::Teams;
use crate::auth::{keys, KeyCache, KeyOwner, NewKey};
use crate::ids;
use crate::store::{KeyRecord, KeyScope, KeyStatus, SessionRecord, Store, StoreError, UserRecord};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("an account with this email exists")]
    EmailTaken,
    #[error("not a valid email address")]
    InvalidEmail,
    #[error("password must be at least 8 characters")]
    WeakPassword,
    #[error("wrong email or password")]
    BadCredentials,
    #[error("missing, unknown or expired session")]
    Unauthenticated,
    #[error("key name must be 1 to 64 characters without control characters")]
    InvalidName,
    #[error("personal keys are archived while you belong to a team")]
    PersonalKeysArchived,
    #[error("not found")]
    NotFound,
    #[error("too many password checks are waiting; try again shortly")]
    Overloaded,
    /// S1: too many failed logins for this email or from this address;
    /// the seconds to wait.
    #[error("too many failed logins; try again in {0} s")]
    Throttled(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<PoolError> for AccountError {
    fn from(e: PoolError) -> AccountError {
        match e {
            PoolError::Overloaded => AccountError::Overloaded,
            PoolError::Failed => StoreError::Unavailable("password task failed".into()).into(),
        }
    }
}

/// Password length bounds: at least 8 (API.md), at most 1024 so a huge
/// password cannot make hashing a denial of service.
const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 1024;

pub struct Accounts {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    session_ttl: Duration,
    /// Verified against when an email is unknown, so a wrong email costs
    /// the same time as a wrong password (no account enumeration).
    dummy_hash: String,
    /// Every Argon2 hash and check runs here (S1).
    passwords: PasswordPool,
    /// Failed logins per email and per client address (S1).
    throttle: LoginThrottle,
}

/// A personal or team key as listings show it (K1): never the secret.
pub type KeyView = KeyRecord;

impl Accounts {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, session_ttl: Duration) -> Accounts {
        let dummy_hash =
            hash_password("not-a-real-password", &mut Memory::new()).unwrap_or_default();
        Accounts {
            store,
            clock,
            session_ttl,
            dummy_hash,
            passwords: PasswordPool::per_core(),
            throttle: LoginThrottle::default(),
        }
    }

    pub async fn sign_up(&self, email: &str, password: &str) -> Result<UserRecord, AccountError> {
        let email = email.trim();
        if !valid_email(email) {
            return Err(AccountError::InvalidEmail);
        }
        let chars = password.chars().count();
        if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&chars) {
            return Err(AccountError::WeakPassword);
        }
        let email_norm = email.to_lowercase();
        if self.store.user_by_email(&email_norm).await?.is_some() {
            return Err(AccountError::EmailTaken);
        }
        let password = password.to_string();
        let password_hash = self
            .passwords
            .run(move |memory| hash_password(&password, memory))
            .await?
            .ok_or_else(|| StoreError::Unavailable("hashing failed".into()))?;
        let user = UserRecord {
            id: ids::new_id("usr"),
            email: email.to_string(),
            email_norm,
            password_hash,
            created_at: self.clock.now(),
        };
        match self.store.create_user(&user).await {
            Ok(()) => Ok(user),
            Err(StoreError::Conflict(_)) => Err(AccountError::EmailTaken),
            Err(e) => Err(e.into()),
        }
    }

    /// A1: a session token for a right email and password pair. S1: from
    /// `addr` (the client's address, where known), refused unchecked with
    /// `Throttled` once the email or the address has used up its failed
    /// logins (`throttle`).
    pub async fn log_in(
        &self,
        email: &str,
        password: &str,
        addr: Option<std::net::IpAddr>,
    ) -> Result<(String, DateTime<Utc>), AccountError> {
        let email_norm = email.trim().to_lowercase();
        self.throttle
            .check(&email_norm, addr, self.clock.now())
            .map_err(AccountError::Throttled)?;
        if password.len() > MAX_PASSWORD * 4 {
            self.throttle.failed(&email_norm, addr, self.clock.now());
            return Err(AccountError::BadCredentials);
        }
        let user = self.store.user_by_email(&email_norm).await?;
        let hash = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| self.dummy_hash.clone());
        let password = password.to_string();
        let ok = match self
            .passwords
            .run(move |memory| verify_password(&password, &hash, memory))
            .await
        {
            Ok(ok) => ok,
            Err(PoolError::Overloaded) => return Err(AccountError::Overloaded),
            Err(PoolError::Failed) => false,
        };
        let user = match (ok, user) {
            (true, Some(u)) => u,
            _ => {
                self.throttle.failed(&email_norm, addr, self.clock.now());
                return Err(AccountError::BadCredentials);
            }
        };
        self.throttle.succeeded(&email_norm);
        let token = ids::new_secret("tgs_");
        let expires_at = self.clock.now()
            + chrono::Duration::from_std(self.session_ttl).unwrap_or(chrono::Duration::days(7));
        self.store
            .put_session(&SessionRecord {
                token_hash: ids::sha256_hex(token.as_bytes()),
                user_id: user.id,
                expires_at,
            })
            .await?;
        Ok((token, expires_at))
    }

    /// A3: the user behind a session token, or `Unauthenticated`.
    pub async fn authenticate(&self, token: &str) -> Result<UserRecord, AccountError> {
        let session = self
            .store
            .session(&ids::sha256_hex(token.as_bytes()))
            .await?
            .ok_or(AccountError::Unauthenticated)?;
        if session.expires_at <= self.clock.now() {
            return Err(AccountError::Unauthenticated);
        }
        self.store
            .user(&session.user_id)
            .await?
            .ok_or(AccountError::Unauthenticated)
    }

    /// A3: ends the session behind `token` (sign-out): its record is
    /// rewritten as expired now, which the stores treat as gone. An unknown
    /// or expired token is `Unauthenticated`.
    pub async fn log_out(&self, token: &str) -> Result<(), AccountError> {
        let user = self.authenticate(token).await?;
        self.store
            .put_session(&SessionRecord {
                token_hash: ids::sha256_hex(token.as_bytes()),
                user_id: user.id,
                expires_at: self.clock.now(),
            })
            .await?;
        Ok(())
    }

    /// K1, K2: a new personal key; the secret is returned once. Refused
    /// while the user belongs to a team; the membership lock is held so
    /// that they cannot join one meanwhile.
    pub async fn create_personal_key(
        &self,
        user: &UserRecord,
        name: &str,
        teams: &Teams,
        cache: &KeyCache,
    ) -> Result<(KeyRecord, NewKey), AccountError> {
        let _exclusive = teams.exclusive().await;
        if teams.in_a_team(&user.id).await? {
            return Err(AccountError::PersonalKeysArchived);
        }
        let name = valid_key_name(name)?;
        let owner = KeyOwner::personal(&user.id);
        Ok(keys::create(&*self.store, cache, owner, name, self.clock.now()).await?)
    }

    /// K1: the user's personal keys, in every status.
    pub async fn personal_keys(&self, user: &UserRecord) -> Result<Vec<KeyRecord>, AccountError> {
        Ok(self.store.keys_of_user(&user.id).await?)
    }

    /// K2, K5: delete one of the user's personal keys (not while they
    /// belong to a team: their keys are archived then).
    pub async fn delete_personal_key(
        &self,
        user: &UserRecord,
        key_id: &str,
        teams: &Teams,
        cache: &KeyCache,
    ) -> Result<(), AccountError> {
        let _exclusive = teams.exclusive().await;
        let in_a_team = teams.in_a_team(&user.id).await?;
        let key = self
            .store
            .key(key_id)
            .await?
            .filter(|k| {
                k.scope == KeyScope::Personal
                    && k.created_by == user.id
                    && k.status != KeyStatus::Deleted
            })
            .ok_or(AccountError::NotFound)?;
        if in_a_team {
            return Err(AccountError::PersonalKeysArchived);
        }
        Ok(keys::set_status(&*self.store, cache, &key, KeyStatus::Deleted).await?)
    }

    /// A user by id (the operator's view), or `NotFound`.
    pub async fn user(&self, user_id: &str) -> Result<UserRecord, AccountError> {
        self.store
            .user(user_id)
            .await?
            .ok_or(AccountError::NotFound)
    }
}

/// One `@`, a non-empty local part, a dotted domain, no spaces or
/// control characters, at most 254 characters.
pub fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Key names (K1a): as team names (T2, names.rs), up to 64 characters.
pub fn valid_key_name(name: &str) -> Result<String, AccountError> {
    super::names::valid_name(name, 64).ok_or(AccountError::InvalidName)
}

/// Argon2 memory a stored hash may ask for at most, in 1 KiB blocks (the
/// default asks 19,456): past it, the check fails rather than allocate.
const MAX_ARGON2_BLOCKS: usize = 64 * 1024;

/// The first `params.block_count()` blocks of `memory`, grown if needed.
fn blocks<'m>(memory: &'m mut Memory, params: &Params) -> Option<&'m mut [argon2::Block]> {
    let n = params.block_count();
    if n > MAX_ARGON2_BLOCKS {
        return None;
    }
    if memory.len() < n {
        memory.resize(n, argon2::Block::default());
    }
    Some(&mut memory[..n])
}

/// An Argon2id PHC string for `password` (the crate's defaults), worked
/// in `memory` (S1: `password_pool`).
fn hash_password(password: &str, memory: &mut Memory) -> Option<String> {
    let salt = SaltString::generate(&mut OsRng);
    let argon = Argon2::default();
    let params = argon.params().clone();
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_buf).ok()?;
    let blocks = blocks(memory, &params)?;
    let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = Output::init_with(len, |out| {
        argon
            .hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, &mut *blocks)
            .map_err(|_| argon2::password_hash::Error::Password)
    })
    .ok()?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).ok()?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Some(phc.to_string())
}

/// Does `password` match the PHC string `hash`? Worked in `memory`; the
/// comparison is constant-time (`Output`).
fn verify_password(password: &str, hash: &str, memory: &mut Memory) -> bool {
    let Ok(h) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (h.salt, h.hash) else {
        return false;
    };
    let (Ok(params), Ok(algorithm)) = (Params::try_from(&h), Algorithm::try_from(h.algorithm))
    else {
        return false;
    };
    let Ok(version) = h.version.map(Version::try_from).transpose() else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let (Ok(salt_bytes), Some(blocks)) = (salt.decode_b64(&mut salt_buf), blocks(memory, &params))
    else {
        return false;
    };
    let argon = Argon2::new(algorithm, version.unwrap_or_default(), params);
    Output::init_with(expected.len(), |out| {
        argon
            .hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, &mut *blocks)
            .map_err(|_| argon2::password_hash::Error::Password)
    })
    .is_ok_and(|computed| computed == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for ok in ["a@b.co", "First.Last+tag@example.org"] {
            assert!(valid_email(ok), "{ok}");
        }
        for bad in [
            "", "a", "a@b", "@b.co", "a@.co", "a@b.co.", "a b@c.de", "a@b@c.de",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn passwords_hash_and_verify() {
        let mut mem = Memory::new();
        let h = hash_password("correct horse", &mut mem).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password("correct horse", &h, &mut mem));
        assert!(!verify_password("wrong horse", &h, &mut mem));
        // The same PHC strings as the crate's own hasher, both ways, so
        // hashes stored before still verify.
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let theirs = Argon2::default()
            .hash_password(b"correct horse", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        assert!(verify_password("correct horse", &theirs, &mut mem));
        assert!(!verify_password("correct horsf", &theirs, &mut mem));
        let ours = PasswordHash::new(&h).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &ours)
            .is_ok());
        // A stored hash asking for too much memory is refused, not run.
        let greedy = theirs.replace("m=19456", "m=1048576");
        assert!(!verify_password("correct horse", &greedy, &mut mem));
        assert_eq!(mem.len(), 19456, "one buffer, reused");
    }
}
