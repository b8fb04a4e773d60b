//! Key minting and key status: the ONE path by which a personal or a team
//! key comes to be (K1, K3) and stops or comes back (K2, K5). The secret is
//! minted here (format in `auth`), only its hash is stored, and the key
//! cache hears of every change after the store has it. Who may create or
//! delete a key is decided by the callers (`accounts`); nothing here
//! checks roles or speaks HTTP.

use chrono::{DateTime, Utc};

use crate::auth::{mint_key, KeyCache, NewKey};
use crate::ids;
use crate::store::{KeyRecord, KeyScope, KeyStatus, Store, StoreError};
use crate::wallet::{team_wallet_id, user_wallet_id};

/// Whose key it is and which wallet it draws from.
pub struct KeyOwner {
    scope: KeyScope,
    created_by: String,
    team_id: Option<String>,
    member_id: String,
    wallet_id: String,
}

impl KeyOwner {
    /// A personal key: the user's own, on the user's wallet (K1).
    pub fn personal(user_id: &str) -> KeyOwner {
        KeyOwner {
            scope: KeyScope::Personal,
            created_by: user_id.to_string(),
            team_id: None,
            member_id: user_id.to_string(),
            wallet_id: user_wallet_id(user_id),
        }
    }

    /// A team key created by `created_by`, assigned to `member_id`, on the
    /// team's wallet (K3).
    pub fn team(team_id: &str, created_by: &str, member_id: &str) -> KeyOwner {
        KeyOwner {
            scope: KeyScope::Team,
            created_by: created_by.to_string(),
            team_id: Some(team_id.to_string()),
            member_id: member_id.to_string(),
            wallet_id: team_wallet_id(team_id),
        }
    }
}

/// Mint a key named `name` (already validated) for `owner`, store its
/// record, then tell the cache. The secret in `NewKey` is shown once.
pub async fn create(
    store: &dyn Store,
    cache: &KeyCache,
    owner: KeyOwner,
    name: String,
    now: DateTime<Utc>,
) -> Result<(KeyRecord, NewKey), StoreError> {
    let minted = mint_key();
    let record = KeyRecord {
        id: ids::new_id("key"),
        hash: minted.hash_hex.clone(),
        prefix: minted.prefix.clone(),
        name,
        scope: owner.scope,
        created_by: owner.created_by,
        team_id: owner.team_id,
        member_id: owner.member_id,
        wallet_id: owner.wallet_id,
        status: KeyStatus::Active,
        created_at: now,
        last_used_at: None,
    };
    store.put_key(&record).await?;
    cache.changed(store, &record.hash).await;
    Ok((record, minted))
}

/// Store first, then the cache (here and, by pub/sub, elsewhere): K5.
pub async fn set_status(
    store: &dyn Store,
    cache: &KeyCache,
    key: &KeyRecord,
    status: KeyStatus,
) -> Result<(), StoreError> {
    store.set_key_status(&key.id, status).await?;
    cache.changed(store, &key.hash).await;
    Ok(())
}
