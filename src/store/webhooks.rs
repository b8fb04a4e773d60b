//! Notification records (N1-N3): webhook endpoints, their deliveries (the
//! durable queue and the delivery log in one record), the fan-out queue
//! of events waiting to become deliveries, and low-balance thresholds.
//! Kept apart from the other records so the feature is one file per store
//! (`memory/webhooks.rs`, `redis_store/webhooks.rs`) plus this one.
//!
//! Every event appended to the event log (`EventStore::append_event`) is
//! also queued here for fan-out, in the same store call, so an event the
//! log has is never missed by notifications, even across a restart.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{EventRecord, StoreResult};
use crate::money::Nanos;

/// A webhook endpoint of a team (`owner` = `team:ID`) or of a user's
/// personal wallet (`user:ID`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WebhookRecord {
    pub id: String,
    pub owner: String,
    pub url: String,
    /// N3 event types this endpoint receives.
    pub events: Vec<String>,
    pub description: Option<String>,
    /// `whsec_` + base64 of 32 random bytes. Stored as it is (not hashed):
    /// every delivery is signed with it (README "Notifications").
    pub secret: String,
    pub created_at: DateTime<Utc>,
}

/// Where a delivery stands (API.md "Notifications").
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

/// One attempt to deliver (the delivery log, N1).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    /// The receiver's status; `None`: no answer (refused, timeout).
    pub response_status: Option<u16>,
    /// Why there was no answer, in a few words.
    pub error: Option<String>,
}

/// One event for one endpoint: its body is fixed at fan-out, so every
/// retry sends the same bytes under the same `webhook-id` (the event id).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// `event_id:webhook_id`: at most one delivery per event and endpoint.
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    /// The N3 type.
    pub kind: String,
    /// The JSON body `{type, timestamp, data}`, as sent.
    pub body: String,
    pub status: DeliveryStatus,
    pub attempts: Vec<Attempt>,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl DeliveryRecord {
    pub fn id_for(event_id: &str, webhook_id: &str) -> String {
        format!("{event_id}:{webhook_id}")
    }
}

/// Webhooks, deliveries and alert thresholds (N1, N2).
#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn put_webhook(&self, w: &WebhookRecord) -> StoreResult<()>;
    async fn webhook(&self, id: &str) -> StoreResult<Option<WebhookRecord>>;
    /// The owner's endpoints, oldest first.
    async fn webhooks(&self, owner: &str) -> StoreResult<Vec<WebhookRecord>>;
    /// Remove an endpoint (its pending deliveries are dropped when due).
    async fn delete_webhook(&self, id: &str) -> StoreResult<()>;

    /// Create the delivery unless one with its id exists; true if created.
    async fn add_delivery(&self, d: &DeliveryRecord) -> StoreResult<bool>;
    /// Replace a delivery (after an attempt); pending ones stay due at
    /// `next_attempt_at`, others leave the queue.
    async fn put_delivery(&self, d: &DeliveryRecord) -> StoreResult<()>;
    /// An endpoint's deliveries, newest first, at most `limit`.
    async fn deliveries(&self, webhook_id: &str, limit: usize) -> StoreResult<Vec<DeliveryRecord>>;
    /// Claim up to `limit` pending deliveries due at `now`: each claimed
    /// one is pushed back by `lease` so another worker (instance) does not
    /// take it meanwhile; the worker's `put_delivery` settles it.
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: usize,
    ) -> StoreResult<Vec<DeliveryRecord>>;

    /// Events appended to the log and not yet fanned out, oldest first.
    async fn unfanned_events(&self, limit: usize) -> StoreResult<Vec<EventRecord>>;
    /// The event is fanned out: drop it from the queue.
    async fn ack_fanned(&self, event_id: &str) -> StoreResult<()>;

    /// N2: a wallet's low-balance thresholds (nano-dollars, above zero).
    async fn put_alerts(&self, wallet_id: &str, thresholds: &[Nanos]) -> StoreResult<()>;
    async fn alerts(&self, wallet_id: &str) -> StoreResult<Vec<Nanos>>;
}
