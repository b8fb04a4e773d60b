//! Notifications (N1-N3): the event log's events become signed webhook
//! deliveries, and `balance.low` also an email to the Owner.
//!
//! Nothing here is on the hot path. Events reach the store's event log as
//! before (accounts, the wallet actor); the store queues each one for
//! fan-out in the same call (store/webhooks.rs). One background worker per
//! instance (`Notifier::run`, on `app.tasks`, stopped by `app.shutdown`)
//! turns queued events into one delivery per subscribed endpoint, and
//! attempts due deliveries: each attempt is recorded on the delivery (the
//! log the Owner reads), and a failed one is retried after the next delay
//! of `NotifyConfig::retry_delays`, then marked failed. Deliveries live in
//! the store, so a restart resumes them; claiming one leases it, so two
//! instances do not send it at once.

pub mod client;
pub mod sign;

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::NotifyConfig;
use crate::mailer::Mailer;
use crate::store::{
    Attempt, DeliveryRecord, DeliveryStatus, EventRecord, OutboxMessage, Store, StoreError,
};
use client::{Outcome, WebhookClient};

/// N3: every type an endpoint may subscribe to.
pub const EVENT_TYPES: [&str; 10] = [
    "balance.low",
    "wallet.suspended",
    "wallet.resumed",
    "quota.reached",
    "member.joined",
    "member.left",
    "member.removed",
    "key.created",
    "key.deleted",
    "team.deleted",
];

/// How long a claimed delivery is kept from other workers: longer than
/// one attempt (10 s) with room to record it.
const LEASE_S: i64 = 60;
/// Deliveries attempted at once per worker turn.
const BATCH: usize = 32;
/// An idle worker polls at most every this many `poll` intervals.
const IDLE_BACKOFF: u32 = 8;

/// The webhook type of an event-log kind (N3), if it has one.
pub fn webhook_type(kind: &str) -> Option<&'static str> {
    let kind = match kind {
        "team.suspended" => "wallet.suspended",
        "team.resumed" => "wallet.resumed",
        other => other,
    };
    EVENT_TYPES.iter().copied().find(|t| *t == kind)
}

/// The endpoint owner an event is for: `user:ID` for a personal wallet's
/// events (logged under the wallet id, `user:ID`), else `team:ID`.
pub fn owner_of(e: &EventRecord) -> String {
    if e.team_id.starts_with("user:") {
        e.team_id.clone()
    } else {
        format!("team:{}", e.team_id)
    }
}

/// The delivery body `{type, timestamp, data}`; `data` names the team or
/// the user whatever the log kept.
pub fn body(e: &EventRecord, kind: &str) -> String {
    let mut data = match &e.data {
        Value::Object(m) => Value::Object(m.clone()),
        _ => json!({}),
    };
    if let Some(user) = e.team_id.strip_prefix("user:") {
        data["user_id"] = user.into();
    } else if data.get("team_id").is_none() {
        data["team_id"] = e.team_id.clone().into();
    }
    json!({
        "type": kind,
        "timestamp": e.at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": data,
    })
    .to_string()
}

pub struct Notifier {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    mailer: Mailer,
    client: WebhookClient,
    config: NotifyConfig,
    public_url: String,
    wake: tokio::sync::Notify,
}

impl Notifier {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        mailer: Mailer,
        config: NotifyConfig,
        public_url: String,
    ) -> Notifier {
        Notifier {
            client: WebhookClient::new(config.allow_private),
            store,
            clock,
            mailer,
            config,
            public_url,
            wake: tokio::sync::Notify::new(),
        }
    }

    pub fn client(&self) -> &WebhookClient {
        &self.client
    }

    /// Look for work now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The worker: fan out, attempt what is due, wait; until `shutdown`.
    /// An idle worker looks less often (the wait doubles up to
    /// `IDLE_BACKOFF` polls); any work, or an event appended by this
    /// process, brings it back to `poll`. Polling
    /// the store every second while idle measurably grew a busy memory
    /// store gateway's resident memory (tests/ledger_memory.rs).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut idle_polls: u32 = 1;
        // An event this process appends is fanned out at once.
        let appended = self.store.events_appended();
        let event_appended = || async {
            match &appended {
                Some(n) => n.notified().await,
                None => std::future::pending().await,
            }
        };
        loop {
            let worked = match self.fan_out().await {
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook fan-out failed; will retry");
                    false
                }
            };
            let delivered = match self.deliver_due().await {
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook deliveries not read; will retry");
                    false
                }
            };
            idle_polls = if worked || delivered {
                1
            } else {
                (idle_polls * 2).min(IDLE_BACKOFF)
            };
            tokio::select! {
                () = tokio::time::sleep(self.config.poll * idle_polls) => {}
                () = self.wake.notified() => idle_polls = 1,
                () = event_appended() => idle_polls = 1,
                () = shutdown.cancelled() => break,
            }
        }
    }

    /// Queued events -> one delivery per subscribed endpoint (created at
    /// most once per event and endpoint), and the email of `balance.low`.
    async fn fan_out(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        loop {
            let events = self.store.unfanned_events(100).await?;
            if events.is_empty() {
                return Ok(n);
            }
            n += events.len();
            for e in &events {
                if let Some(kind) = webhook_type(&e.kind) {
                    self.fan_out_one(e, kind).await?;
                }
                self.store.ack_fanned(&e.id).await?;
            }
        }
    }

    async fn fan_out_one(&self, e: &EventRecord, kind: &'static str) -> Result<(), StoreError> {
        let owner = owner_of(e);
        let now = self.clock.now();
        let body = body(e, kind);
        for w in self.store.webhooks(&owner).await? {
            if !w.events.iter().any(|t| t == kind) {
                continue;
            }
            let d = DeliveryRecord {
                id: DeliveryRecord::id_for(&e.id, &w.id),
                webhook_id: w.id.clone(),
                event_id: e.id.clone(),
                kind: kind.to_string(),
                body: body.clone(),
                status: DeliveryStatus::Pending,
                attempts: Vec::new(),
                next_attempt_at: Some(now),
                created_at: now,
            };
            self.store.add_delivery(&d).await?;
        }
        if kind == "balance.low" {
            self.mail_low_balance(e, &owner).await?;
        }
        Ok(())
    }

    /// N2: the Owner's email for `balance.low`, through the outbox (one
    /// message per event: its id is derived from the event's).
    async fn mail_low_balance(&self, e: &EventRecord, owner: &str) -> Result<(), StoreError> {
        let (user_id, what) = if let Some(user) = owner.strip_prefix("user:") {
            (user.to_string(), "your personal wallet".to_string())
        } else {
            let team_id = e.team_id.as_str();
            let Some(team) = self.store.team(team_id).await? else {
                return Ok(());
            };
            (team.owner_id.clone(), format!("team \"{}\"", team.name))
        };
        let Some(user) = self.store.user(&user_id).await? else {
            return Ok(());
        };
        let usd = |k: &str| {
            e.data
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string()
        };
        let link = format!("{}/", self.public_url);
        let body = format!(
            "The balance of {what} is ${} (USD), below your alert threshold of ${}.\n\n\
             API calls stop when the balance runs out. Add funds here:\n{link}\n",
            usd("balance"),
            usd("threshold"),
        );
        let m = OutboxMessage {
            id: format!("mail_{}", e.id),
            to: user.email.clone(),
            subject: format!("Low balance: {what} is below ${}", usd("threshold")),
            body,
            link,
            created_at: self.clock.now(),
            delivered_at: None,
        };
        self.mailer.send(m).await
    }

    /// Attempt every delivery due now, a batch at a time, concurrently.
    async fn deliver_due(&self) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let now = self.clock.now();
            let due = self
                .store
                .claim_due(now, chrono::Duration::seconds(LEASE_S), BATCH)
                .await?;
            if due.is_empty() {
                return Ok(total);
            }
            let n = due.len();
            total += n;
            futures_util::future::join_all(due.into_iter().map(|d| self.attempt(d))).await;
            if n < BATCH {
                return Ok(total);
            }
        }
    }

    /// One attempt, recorded on the delivery whatever happens.
    async fn attempt(&self, mut d: DeliveryRecord) {
        let outcome = match self.store.webhook(&d.webhook_id).await {
            Ok(Some(w)) => {
                let ts = self.clock.now().timestamp();
                match sign::signature(&w.secret, &d.event_id, ts, &d.body) {
                    Some(sig) => {
                        let headers = [
                            ("webhook-id", d.event_id.clone()),
                            ("webhook-timestamp", ts.to_string()),
                            ("webhook-signature", sig),
                        ];
                        self.client.post(&w.url, headers, d.body.clone()).await
                    }
                    None => Outcome::Error("the endpoint's secret is unreadable".into()),
                }
            }
            Ok(None) => {
                // The endpoint was deleted: the delivery ends here.
                d.status = DeliveryStatus::Failed;
                d.next_attempt_at = None;
                self.record(&d).await;
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "webhook endpoint not read; will retry");
                return;
            }
        };
        self.settle(&mut d, outcome, self.clock.now());
        self.record(&d).await;
    }

    /// The delivery after an attempt: delivered on 2xx, else retried after
    /// the next delay, or failed after the last.
    fn settle(&self, d: &mut DeliveryRecord, outcome: Outcome, now: DateTime<Utc>) {
        let (response_status, error) = match outcome {
            Outcome::Status(s) => (Some(s), None),
            Outcome::Error(e) => (None, Some(e)),
        };
        d.attempts.push(Attempt {
            at: now,
            response_status,
            error,
        });
        if response_status.is_some_and(|s| (200..300).contains(&s)) {
            d.status = DeliveryStatus::Delivered;
            d.next_attempt_at = None;
            return;
        }
        match self.config.retry_delays.get(d.attempts.len() - 1) {
            Some(wait) => {
                d.next_attempt_at =
                    Some(now + chrono::Duration::from_std(*wait).unwrap_or(chrono::Duration::MAX));
            }
            None => {
                d.status = DeliveryStatus::Failed;
                d.next_attempt_at = None;
            }
        }
    }

    async fn record(&self, d: &DeliveryRecord) {
        if let Err(e) = self.store.put_delivery(d).await {
            // The lease runs out and the delivery is attempted again, with
            // the same webhook-id.
            tracing::warn!(error = %e, delivery = %d.id, "webhook attempt not recorded");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_kinds_map_to_webhook_types() {
        assert_eq!(webhook_type("team.suspended"), Some("wallet.suspended"));
        assert_eq!(webhook_type("team.resumed"), Some("wallet.resumed"));
        assert_eq!(webhook_type("member.joined"), Some("member.joined"));
        assert_eq!(webhook_type("invite.created"), None);
        let e = EventRecord {
            id: "evt_1".into(),
            team_id: "user:u1".into(),
            kind: "wallet.suspended".into(),
            at: Utc::now(),
            data: json!({"balance": "0"}),
        };
        assert_eq!(owner_of(&e), "user:u1");
        let b: Value = serde_json::from_str(&body(&e, "wallet.suspended")).unwrap();
        assert_eq!(b["data"]["user_id"], "u1");
        assert_eq!(b["type"], "wallet.suspended");
    }
}
