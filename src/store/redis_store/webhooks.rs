//! The Redis store's notification records (N1-N3), all under the hash tag
//! `{notify}` so the scripts may touch several keys on a cluster too:
//! `P{notify}:webhook:ID` (JSON), `P{notify}:webhooks:OWNER` (set of ids),
//! `P{notify}:delivery:ID` (JSON), `P{notify}:deliveries:WEBHOOK` (zset
//! by creation ms), `P{notify}:due` (zset of pending delivery ids by next
//! attempt ms), `P{notify}:fanout` (list of event ids) with
//! `P{notify}:fanout_events` (hash id -> event JSON), and
//! `P{notify}:alerts:WALLET` (JSON array of nanos). Creating a delivery
//! and claiming due ones are Lua scripts (`add_delivery.lua`,
//! `claim_due.lua`): atomic, so two instances never take one delivery at
//! once and a crash never leaves a delivery outside the queue.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::Script;

use super::{decode, encode, RedisStore};
use crate::money::Nanos;
use crate::store::{
    DeliveryRecord, DeliveryStatus, EventRecord, StoreResult, WebhookRecord, WebhookStore,
};

impl RedisStore {
    fn nk(&self, part: &str) -> String {
        format!("{}{{notify}}:{part}", self.prefix)
    }

    /// The pipeline commands that queue an appended event for fan-out
    /// (used by `append_event`, in its transaction).
    pub(super) fn queue_fanout(&self, pipe: &mut redis::Pipeline, e: &EventRecord, json: &str) {
        pipe.cmd("HSET")
            .arg(self.nk("fanout_events"))
            .arg(&e.id)
            .arg(json)
            .ignore()
            .cmd("RPUSH")
            .arg(self.nk("fanout"))
            .arg(&e.id)
            .ignore();
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

#[async_trait]
impl WebhookStore for RedisStore {
    async fn put_webhook(&self, w: &WebhookRecord) -> StoreResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.nk(&format!("webhook:{}", w.id)))
            .arg(encode(w)?)
            .ignore()
            .cmd("SADD")
            .arg(self.nk(&format!("webhooks:{}", w.owner)))
            .arg(&w.id)
            .ignore();
        self.p::<()>(&pipe).await
    }

    async fn webhook(&self, id: &str) -> StoreResult<Option<WebhookRecord>> {
        self.get_json(&self.nk(&format!("webhook:{id}"))).await
    }

    async fn webhooks(&self, owner: &str) -> StoreResult<Vec<WebhookRecord>> {
        let ids = self
            .smembers(&self.nk(&format!("webhooks:{owner}")))
            .await?;
        let keys: Vec<String> = ids
            .iter()
            .map(|id| self.nk(&format!("webhook:{id}")))
            .collect();
        let mut out: Vec<WebhookRecord> = self.mget_json(&keys).await?;
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    async fn delete_webhook(&self, id: &str) -> StoreResult<()> {
        let Some(w) = self.webhook(id).await? else {
            return Ok(());
        };
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SREM")
            .arg(self.nk(&format!("webhooks:{}", w.owner)))
            .arg(id)
            .ignore()
            .cmd("DEL")
            .arg(self.nk(&format!("webhook:{id}")))
            .ignore();
        self.p::<()>(&pipe).await
    }

    async fn add_delivery(&self, d: &DeliveryRecord) -> StoreResult<bool> {
        let script = Script::new(include_str!("add_delivery.lua"));
        let mut call = script.prepare_invoke();
        call.key(self.nk(&format!("delivery:{}", d.id)))
            .key(self.nk(&format!("deliveries:{}", d.webhook_id)))
            .key(self.nk("due"))
            .arg(encode(d)?)
            .arg(ms(d.created_at))
            .arg(ms(d.next_attempt_at.unwrap_or(d.created_at)))
            .arg(&d.id);
        let mut c = self.conn.clone();
        let created: i64 = super::timed(call.invoke_async(&mut c)).await?;
        Ok(created == 1)
    }

    async fn put_delivery(&self, d: &DeliveryRecord) -> StoreResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.nk(&format!("delivery:{}", d.id)))
            .arg(encode(d)?)
            .ignore();
        match (d.status, d.next_attempt_at) {
            (DeliveryStatus::Pending, Some(at)) => {
                pipe.cmd("ZADD").arg(self.nk("due")).arg(ms(at)).arg(&d.id)
            }
            _ => pipe.cmd("ZREM").arg(self.nk("due")).arg(&d.id),
        }
        .ignore();
        self.p::<()>(&pipe).await
    }

    async fn deliveries(&self, webhook_id: &str, limit: usize) -> StoreResult<Vec<DeliveryRecord>> {
        let stop = i64::try_from(limit).unwrap_or(i64::MAX).saturating_sub(1);
        let ids: Vec<String> = self
            .q(redis::cmd("ZREVRANGE")
                .arg(self.nk(&format!("deliveries:{webhook_id}")))
                .arg(0)
                .arg(stop))
            .await?;
        let keys: Vec<String> = ids
            .iter()
            .map(|id| self.nk(&format!("delivery:{id}")))
            .collect();
        self.mget_json(&keys).await
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: usize,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let script = Script::new(include_str!("claim_due.lua"));
        let mut call = script.prepare_invoke();
        call.key(self.nk("due"))
            .arg(ms(now))
            .arg(ms(now + lease))
            .arg(limit);
        let mut c = self.conn.clone();
        let ids: Vec<String> = super::timed(call.invoke_async(&mut c)).await?;
        let keys: Vec<String> = ids
            .iter()
            .map(|id| self.nk(&format!("delivery:{id}")))
            .collect();
        self.mget_json(&keys).await
    }

    async fn unfanned_events(&self, limit: usize) -> StoreResult<Vec<EventRecord>> {
        let stop = i64::try_from(limit).unwrap_or(i64::MAX).saturating_sub(1);
        let ids: Vec<String> = self
            .q(redis::cmd("LRANGE").arg(self.nk("fanout")).arg(0).arg(stop))
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.nk("fanout_events");
        let rows: Vec<Option<String>> = self.q(redis::cmd("HMGET").arg(&key).arg(&ids)).await?;
        rows.into_iter()
            .flatten()
            .map(|s| decode(&key, &s))
            .collect()
    }

    async fn ack_fanned(&self, event_id: &str) -> StoreResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("LREM")
            .arg(self.nk("fanout"))
            .arg(1)
            .arg(event_id)
            .ignore()
            .cmd("HDEL")
            .arg(self.nk("fanout_events"))
            .arg(event_id)
            .ignore();
        self.p::<()>(&pipe).await
    }

    async fn put_alerts(&self, wallet_id: &str, thresholds: &[Nanos]) -> StoreResult<()> {
        let key = self.nk(&format!("alerts:{wallet_id}"));
        if thresholds.is_empty() {
            self.q::<()>(redis::cmd("DEL").arg(&key)).await
        } else {
            self.set_json(&key, &thresholds).await
        }
    }

    async fn alerts(&self, wallet_id: &str) -> StoreResult<Vec<Nanos>> {
        Ok(self
            .get_json(&self.nk(&format!("alerts:{wallet_id}")))
            .await?
            .unwrap_or_default())
    }
}
