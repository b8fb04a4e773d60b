//! The memory store's notification records (N1-N3): maps beside the
//! others, under the same lock.

use std::collections::{HashMap, VecDeque};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::MemoryStore;
use crate::money::Nanos;
use crate::store::{
    DeliveryRecord, DeliveryStatus, EventRecord, StoreResult, WebhookRecord, WebhookStore,
};

/// The notification maps of `Inner`.
#[derive(Default)]
pub(super) struct NotifyData {
    webhooks: HashMap<String, WebhookRecord>,
    deliveries: HashMap<String, DeliveryRecord>,
    /// Delivery id -> when it may next be attempted (pending ones only).
    due: HashMap<String, DateTime<Utc>>,
    /// Events appended and not yet fanned out, in order.
    pub(super) fanout: VecDeque<EventRecord>,
    alerts: HashMap<String, Vec<Nanos>>,
}

impl NotifyData {
    fn set_due(&mut self, d: &DeliveryRecord) {
        match (d.status, d.next_attempt_at) {
            (DeliveryStatus::Pending, Some(at)) => {
                self.due.insert(d.id.clone(), at);
            }
            _ => {
                self.due.remove(&d.id);
            }
        }
    }
}

#[async_trait]
impl WebhookStore for MemoryStore {
    async fn put_webhook(&self, w: &WebhookRecord) -> StoreResult<()> {
        self.lock().notify.webhooks.insert(w.id.clone(), w.clone());
        Ok(())
    }

    async fn webhook(&self, id: &str) -> StoreResult<Option<WebhookRecord>> {
        Ok(self.lock().notify.webhooks.get(id).cloned())
    }

    async fn webhooks(&self, owner: &str) -> StoreResult<Vec<WebhookRecord>> {
        let g = self.lock();
        let mut out: Vec<_> = g
            .notify
            .webhooks
            .values()
            .filter(|w| w.owner == owner)
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    async fn delete_webhook(&self, id: &str) -> StoreResult<()> {
        self.lock().notify.webhooks.remove(id);
        Ok(())
    }

    async fn add_delivery(&self, d: &DeliveryRecord) -> StoreResult<bool> {
        let mut g = self.lock();
        if g.notify.deliveries.contains_key(&d.id) {
            return Ok(false);
        }
        g.notify.deliveries.insert(d.id.clone(), d.clone());
        g.notify.set_due(d);
        Ok(true)
    }

    async fn put_delivery(&self, d: &DeliveryRecord) -> StoreResult<()> {
        let mut g = self.lock();
        g.notify.deliveries.insert(d.id.clone(), d.clone());
        g.notify.set_due(d);
        Ok(())
    }

    async fn deliveries(&self, webhook_id: &str, limit: usize) -> StoreResult<Vec<DeliveryRecord>> {
        let g = self.lock();
        let mut out: Vec<_> = g
            .notify
            .deliveries
            .values()
            .filter(|d| d.webhook_id == webhook_id)
            .cloned()
            .collect();
        out.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        out.truncate(limit);
        Ok(out)
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: usize,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let mut g = self.lock();
        let mut ids: Vec<(DateTime<Utc>, String)> = g
            .notify
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, at)| (*at, id.clone()))
            .collect();
        ids.sort();
        ids.truncate(limit);
        let mut out = Vec::with_capacity(ids.len());
        for (_, id) in ids {
            g.notify.due.insert(id.clone(), now + lease);
            if let Some(d) = g.notify.deliveries.get(&id) {
                out.push(d.clone());
            }
        }
        Ok(out)
    }

    async fn unfanned_events(&self, limit: usize) -> StoreResult<Vec<EventRecord>> {
        Ok(self
            .lock()
            .notify
            .fanout
            .iter()
            .take(limit)
            .cloned()
            .collect())
    }

    async fn ack_fanned(&self, event_id: &str) -> StoreResult<()> {
        self.lock().notify.fanout.retain(|e| e.id != event_id);
        Ok(())
    }

    async fn put_alerts(&self, wallet_id: &str, thresholds: &[Nanos]) -> StoreResult<()> {
        let mut g = self.lock();
        if thresholds.is_empty() {
            g.notify.alerts.remove(wallet_id);
        } else {
            g.notify
                .alerts
                .insert(wallet_id.to_string(), thresholds.to_vec());
        }
        Ok(())
    }

    async fn alerts(&self, wallet_id: &str) -> StoreResult<Vec<Nanos>> {
        Ok(self
            .lock()
            .notify
            .alerts
            .get(wallet_id)
            .cloned()
            .unwrap_or_default())
    }
}
