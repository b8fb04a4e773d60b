//! Every record but keys and money, in Redis: users and sessions, teams,
//! members and invites, the outbox and the event log, transfers, and
//! idempotency answers. One record per key, indexes beside it; writes
//! ordered so a crash between them leaves only unreachable leftovers.

use async_trait::async_trait;

use super::{decode, encode, timed, RedisStore, CHUNK};
use crate::store::{
    EventRecord, EventStore, IdempotencyRecord, IdempotencyStore, InviteRecord, MemberRecord,
    OutboxMessage, SessionRecord, StoreError, StoreResult, TeamRecord, TeamStore, TransferRecord,
    TransferStore, UserRecord, UserStore,
};

#[async_trait]
impl UserStore for RedisStore {
    async fn create_user(&self, user: &UserRecord) -> StoreResult<()> {
        // The record first, then the email claim: a crash between leaves an
        // unreachable record under a fresh id, never an email that nobody
        // can sign up with again.
        let user_key = self.k("user", &user.id);
        self.set_json(&user_key, user).await?;
        let claimed: Option<String> = self
            .q(redis::cmd("SET")
                .arg(self.k("user_email", &user.email_norm))
                .arg(&user.id)
                .arg("NX")
                .arg("GET"))
            .await?;
        match claimed {
            None => Ok(()),
            Some(owner) => {
                if owner != user.id {
                    self.q::<()>(redis::cmd("DEL").arg(&user_key)).await?;
                }
                Err(StoreError::Conflict("email"))
            }
        }
    }

    async fn user_by_email(&self, email_norm: &str) -> StoreResult<Option<UserRecord>> {
        let id: Option<String> = self
            .q(redis::cmd("GET").arg(self.k("user_email", email_norm)))
            .await?;
        match id {
            Some(id) => self.user(&id).await,
            None => Ok(None),
        }
    }

    async fn user(&self, id: &str) -> StoreResult<Option<UserRecord>> {
        self.get_json(&self.k("user", id)).await
    }

    async fn put_session(&self, s: &SessionRecord) -> StoreResult<()> {
        // Redis forgets the session when it expires (PXAT, rounded up to the
        // next millisecond); an instant in the past deletes it at once.
        let ms = s.expires_at.timestamp_millis()
            + i64::from(
                !s.expires_at
                    .timestamp_subsec_nanos()
                    .is_multiple_of(1_000_000),
            );
        self.q::<()>(
            redis::cmd("SET")
                .arg(self.k("session", &s.token_hash))
                .arg(encode(s)?)
                .arg("PXAT")
                .arg(ms.max(1)),
        )
        .await
    }

    async fn session(&self, token_hash: &str) -> StoreResult<Option<SessionRecord>> {
        self.get_json(&self.k("session", token_hash)).await
    }
}

#[async_trait]
impl TeamStore for RedisStore {
    async fn put_team(&self, team: &TeamRecord) -> StoreResult<()> {
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.k("team", &team.id))
            .arg(encode(team)?)
            .ignore();
        pipe.cmd("SADD")
            .arg(self.k("owned_teams", &team.owner_id))
            .arg(&team.id)
            .ignore();
        self.p::<()>(&pipe).await
    }

    async fn team(&self, id: &str) -> StoreResult<Option<TeamRecord>> {
        self.get_json(&self.k("team", id)).await
    }

    async fn owned_team(&self, user_id: &str) -> StoreResult<Option<TeamRecord>> {
        let ids = self.smembers(&self.k("owned_teams", user_id)).await?;
        let keys: Vec<String> = ids.iter().map(|id| self.k("team", id)).collect();
        let teams: Vec<TeamRecord> = self.mget_json(&keys).await?;
        Ok(teams
            .into_iter()
            .filter(|t| t.owner_id == user_id && t.deleted_at.is_none())
            .min_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id))))
    }

    async fn put_member(&self, m: &MemberRecord) -> StoreResult<()> {
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(self.k("members", &m.team_id))
            .arg(&m.user_id)
            .arg(encode(m)?)
            .ignore();
        pipe.cmd("SADD")
            .arg(self.k("memberships", &m.user_id))
            .arg(&m.team_id)
            .ignore();
        self.p::<()>(&pipe).await
    }

    async fn member(&self, team_id: &str, user_id: &str) -> StoreResult<Option<MemberRecord>> {
        let key = self.k("members", team_id);
        let v: Option<String> = self.q(redis::cmd("HGET").arg(&key).arg(user_id)).await?;
        v.map(|s| decode(&key, &s)).transpose()
    }

    async fn members(&self, team_id: &str) -> StoreResult<Vec<MemberRecord>> {
        let key = self.k("members", team_id);
        let rows: Vec<String> = self.q(redis::cmd("HVALS").arg(&key)).await?;
        let mut v = rows
            .iter()
            .map(|s| decode(&key, s))
            .collect::<StoreResult<Vec<MemberRecord>>>()?;
        v.sort_by(|a, b| (a.joined_at, &a.user_id).cmp(&(b.joined_at, &b.user_id)));
        Ok(v)
    }

    async fn memberships(&self, user_id: &str) -> StoreResult<Vec<MemberRecord>> {
        let teams = self.smembers(&self.k("memberships", user_id)).await?;
        let mut v = Vec::with_capacity(teams.len());
        for chunk in teams.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for t in chunk {
                pipe.cmd("HGET").arg(self.k("members", t)).arg(user_id);
            }
            let rows: Vec<Option<String>> = self.p(&pipe).await?;
            for row in rows.into_iter().flatten() {
                let m: MemberRecord = decode("member", &row)?;
                if m.user_id == user_id && m.active() {
                    v.push(m);
                }
            }
        }
        v.sort_by(|a, b| (a.joined_at, &a.team_id).cmp(&(b.joined_at, &b.team_id)));
        Ok(v)
    }

    async fn put_invite(&self, inv: &InviteRecord) -> StoreResult<()> {
        // The record before its indexes: an index never points at nothing
        // for longer than a failed call.
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.k("invite", &inv.id))
            .arg(encode(inv)?)
            .ignore();
        pipe.cmd("SET")
            .arg(self.k("invite_token", &inv.token_hash))
            .arg(&inv.id)
            .ignore();
        pipe.cmd("SADD")
            .arg(self.k("team_invites", &inv.team_id))
            .arg(&inv.id)
            .ignore();
        self.p::<()>(&pipe).await
    }

    async fn invite(&self, id: &str) -> StoreResult<Option<InviteRecord>> {
        self.get_json(&self.k("invite", id)).await
    }

    async fn invite_by_token(&self, token_hash: &str) -> StoreResult<Option<InviteRecord>> {
        let id: Option<String> = self
            .q(redis::cmd("GET").arg(self.k("invite_token", token_hash)))
            .await?;
        match id {
            Some(id) => self.invite(&id).await,
            None => Ok(None),
        }
    }

    async fn invites(&self, team_id: &str) -> StoreResult<Vec<InviteRecord>> {
        let ids = self.smembers(&self.k("team_invites", team_id)).await?;
        let keys: Vec<String> = ids.iter().map(|id| self.k("invite", id)).collect();
        let mut v: Vec<InviteRecord> = self
            .mget_json::<InviteRecord>(&keys)
            .await?
            .into_iter()
            .filter(|i| i.team_id == team_id)
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }
}

#[async_trait]
impl EventStore for RedisStore {
    async fn put_outbox(&self, m: &OutboxMessage) -> StoreResult<()> {
        let (messages, order) = self.outbox_keys();
        let mut call = self.scripts.put_outbox.prepare_invoke();
        call.key(messages).key(order).arg(&m.id).arg(encode(m)?);
        let mut c = self.conn.clone();
        timed(call.invoke_async::<i64>(&mut c)).await.map(|_| ())
    }

    async fn outbox(&self) -> StoreResult<Vec<OutboxMessage>> {
        let (messages, order) = self.outbox_keys();
        let ids: Vec<String> = self
            .q(redis::cmd("LRANGE").arg(&order).arg(0).arg(-1))
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let rows: Vec<Option<String>> = self
                .q(redis::cmd("HMGET").arg(&messages).arg(chunk))
                .await?;
            for row in rows.into_iter().flatten() {
                out.push(decode(&messages, &row)?);
            }
        }
        Ok(out)
    }

    /// The event log, and the notifications' fan-out queue in the same
    /// transaction (store/webhooks.rs).
    async fn append_event(&self, e: &EventRecord) -> StoreResult<()> {
        let json = encode(e)?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("RPUSH")
            .arg(self.k("events", &e.team_id))
            .arg(&json)
            .ignore();
        self.queue_fanout(&mut pipe, e, &json);
        self.p::<()>(&pipe).await?;
        self.events_appended.notify_one();
        Ok(())
    }

    fn events_appended(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        Some(self.events_appended.clone())
    }

    async fn events(&self, team_id: &str) -> StoreResult<Vec<EventRecord>> {
        let key = self.k("events", team_id);
        let rows: Vec<String> = self
            .q(redis::cmd("LRANGE").arg(&key).arg(0).arg(-1))
            .await?;
        rows.iter().map(|s| decode(&key, s)).collect()
    }
}

#[async_trait]
impl TransferStore for RedisStore {
    async fn put_transfer(&self, t: &TransferRecord) -> StoreResult<()> {
        self.q::<()>(
            redis::cmd("HSET")
                .arg(self.transfers_key())
                .arg(&t.id)
                .arg(encode(t)?),
        )
        .await
    }

    async fn finish_transfer(&self, id: &str) -> StoreResult<()> {
        self.q::<()>(redis::cmd("HDEL").arg(self.transfers_key()).arg(id))
            .await
    }

    async fn unfinished_transfers(&self) -> StoreResult<Vec<TransferRecord>> {
        let key = self.transfers_key();
        let rows: Vec<String> = self.q(redis::cmd("HVALS").arg(&key)).await?;
        let mut v = rows
            .iter()
            .map(|s| decode(&key, s))
            .collect::<StoreResult<Vec<TransferRecord>>>()?;
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }
}

#[async_trait]
impl IdempotencyStore for RedisStore {
    async fn idempotency(&self, scope_key: &str) -> StoreResult<Option<IdempotencyRecord>> {
        self.get_json(&self.k("idem", scope_key)).await
    }

    async fn put_idempotency(&self, scope_key: &str, rec: &IdempotencyRecord) -> StoreResult<()> {
        self.set_json(&self.k("idem", scope_key), rec).await
    }
}
