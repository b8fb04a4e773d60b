//! Key records in Redis: a hash of `json` + `status` per key, claimed by
//! hash first (`key_hash:HASH`), indexed per user and per team, with
//! `last_used_at` merged in on read from the wallet's `keyused` hash
//! (which `apply` writes: the key record lives in another hash slot).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{decode, encode, timed, RedisStore, CHUNK};
use crate::store::{KeyRecord, KeyScope, KeyStatus, KeyStore, StoreError, StoreResult};

impl RedisStore {
    /// Load key records by id, with `status` and `last_used_at` merged in.
    async fn keys_by_ids(&self, ids: &[String]) -> StoreResult<Vec<KeyRecord>> {
        let mut keys = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("HMGET")
                    .arg(self.k("key", id))
                    .arg("json")
                    .arg("status");
            }
            let rows: Vec<(Option<String>, Option<String>)> = self.p(&pipe).await?;
            for (id, (json, status)) in chunk.iter().zip(rows) {
                let Some(json) = json else { continue };
                let mut key: KeyRecord = decode(&self.k("key", id), &json)?;
                if let Some(s) = status {
                    key.status = decode(&self.k("key", id), &format!("\"{s}\""))?;
                }
                keys.push(key);
            }
        }
        for chunk in keys.chunks_mut(CHUNK) {
            let mut pipe = redis::pipe();
            for key in chunk.iter() {
                pipe.cmd("HGET")
                    .arg(self.wk(&key.wallet_id, "keyused"))
                    .arg(&key.id);
            }
            let used: Vec<Option<String>> = self.p(&pipe).await?;
            for (key, used) in chunk.iter_mut().zip(used) {
                if let Some(t) = used.as_deref().and_then(parse_time) {
                    key.last_used_at = key.last_used_at.max(Some(t));
                }
            }
        }
        Ok(keys)
    }
}

#[async_trait]
impl KeyStore for RedisStore {
    async fn put_key(&self, key: &KeyRecord) -> StoreResult<()> {
        // Claim the hash first: a crash after it leaves a claim whose record
        // is missing (`key_by_hash` finds nothing; a retry with the same id
        // succeeds), never two keys answering to one hash.
        let claimed: Option<String> = self
            .q(redis::cmd("SET")
                .arg(self.k("key_hash", &key.hash))
                .arg(&key.id)
                .arg("NX")
                .arg("GET"))
            .await?;
        if claimed.as_deref().is_some_and(|owner| owner != key.id) {
            return Err(StoreError::Conflict("key hash"));
        }
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(self.k("key", &key.id))
            .arg("json")
            .arg(encode(key)?)
            .arg("status")
            .arg(status_text(key.status)?)
            .ignore();
        // Index sets may keep stale members after an owner or team change;
        // readers filter on the record itself.
        pipe.cmd("SADD")
            .arg(self.k("user_keys", &key.created_by))
            .arg(&key.id)
            .ignore();
        if let Some(team) = &key.team_id {
            pipe.cmd("SADD")
                .arg(self.k("team_keys", team))
                .arg(&key.id)
                .ignore();
        }
        self.p::<()>(&pipe).await
    }

    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<KeyRecord>> {
        let id: Option<String> = self
            .q(redis::cmd("GET").arg(self.k("key_hash", hash)))
            .await?;
        match id {
            Some(id) => self.key(&id).await,
            None => Ok(None),
        }
    }

    async fn key(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        Ok(self.keys_by_ids(&[id.to_string()]).await?.pop())
    }

    async fn keys_of_user(&self, user_id: &str) -> StoreResult<Vec<KeyRecord>> {
        let ids = self.smembers(&self.k("user_keys", user_id)).await?;
        let mut keys: Vec<KeyRecord> = self
            .keys_by_ids(&ids)
            .await?
            .into_iter()
            .filter(|k| k.scope == KeyScope::Personal && k.created_by == user_id)
            .collect();
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    async fn set_key_status(&self, id: &str, status: KeyStatus) -> StoreResult<()> {
        let mut call = self.scripts.set_key_status.prepare_invoke();
        call.key(self.k("key", id)).arg(status_text(status)?);
        let mut c = self.conn.clone();
        let set: i64 = timed(call.invoke_async(&mut c)).await?;
        if set == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    async fn team_keys(&self, team_id: &str) -> StoreResult<Vec<KeyRecord>> {
        let ids = self.smembers(&self.k("team_keys", team_id)).await?;
        let mut v: Vec<KeyRecord> = self
            .keys_by_ids(&ids)
            .await?
            .into_iter()
            .filter(|k| k.team_id.as_deref() == Some(team_id))
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }
}

/// The serde name of a status (`"active"`), as the record hash stores it.
fn status_text(s: KeyStatus) -> StoreResult<String> {
    match serde_json::to_value(s) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        _ => Err(StoreError::Corrupt(format!("key status {s:?} has no name"))),
    }
}

/// A `keyused` value: zero-padded nanoseconds since the epoch.
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    s.parse::<i64>().ok().map(DateTime::from_timestamp_nanos)
}
