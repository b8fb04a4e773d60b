//! The store contract of notifications (N1, N2; store/webhooks.rs), run
//! against the memory store and the Redis store like `store_contract.rs`
//! (kept in its own file so the feature is one file per concern).

#![allow(
    clippy::unwrap_used,
    reason = "a test's unwrap is its failure report (clippy.toml allows it in #[test] fns only)"
)]

#[path = "common/store.rs"]
mod fixtures;

use chrono::{Duration, Utc};
use fixtures::*;
use serde_json::json;
use tollgate::money::Nanos;
use tollgate::store::*;

fn webhook(id: &str, owner: &str, secs: i64) -> WebhookRecord {
    WebhookRecord {
        id: id.into(),
        owner: owner.into(),
        url: "https://example.com/h".into(),
        events: vec!["balance.low".into()],
        description: None,
        secret: "whsec_c2VjcmV0".into(),
        created_at: Utc::now() + Duration::seconds(secs),
    }
}

fn delivery(event: &str, webhook: &str, due: chrono::DateTime<Utc>) -> DeliveryRecord {
    DeliveryRecord {
        id: DeliveryRecord::id_for(event, webhook),
        webhook_id: webhook.into(),
        event_id: event.into(),
        kind: "balance.low".into(),
        body: "{}".into(),
        status: DeliveryStatus::Pending,
        attempts: vec![],
        next_attempt_at: Some(due),
        created_at: due,
    }
}

async fn webhooks_are_listed_per_owner_and_deleted(s: &dyn Store) {
    s.put_webhook(&webhook("wh_2", "team:t1", 2)).await.unwrap();
    s.put_webhook(&webhook("wh_1", "team:t1", 1)).await.unwrap();
    s.put_webhook(&webhook("wh_3", "user:u1", 1)).await.unwrap();
    let ids: Vec<_> = s
        .webhooks("team:t1")
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(ids, ["wh_1", "wh_2"]);
    assert_eq!(
        s.webhook("wh_3").await.unwrap().unwrap().secret,
        "whsec_c2VjcmV0"
    );
    s.delete_webhook("wh_1").await.unwrap();
    assert_eq!(s.webhook("wh_1").await.unwrap(), None);
    assert_eq!(s.webhooks("team:t1").await.unwrap().len(), 1);
    assert!(s.webhooks("team:nobody").await.unwrap().is_empty());
}

async fn deliveries_are_created_once_claimed_once_and_logged(s: &dyn Store) {
    let now = Utc::now();
    let d = delivery("evt_1", "wh_1", now);
    assert!(s.add_delivery(&d).await.unwrap());
    assert!(
        !s.add_delivery(&d).await.unwrap(),
        "one delivery per event and endpoint"
    );
    let later = delivery("evt_2", "wh_1", now + Duration::seconds(1));
    assert!(s.add_delivery(&later).await.unwrap());
    // Due now: only the first; a second claim within the lease: none.
    let lease = Duration::seconds(60);
    let claimed = s.claim_due(now, lease, 10).await.unwrap();
    assert_eq!(claimed, vec![d.clone()]);
    assert!(s.claim_due(now, lease, 10).await.unwrap().is_empty());
    // After the lease it is due again (a worker died mid-attempt).
    let after = now + Duration::seconds(61);
    assert_eq!(s.claim_due(after, lease, 10).await.unwrap().len(), 2);
    // An attempt recorded: delivered leaves the queue for good.
    let mut done = d.clone();
    done.status = DeliveryStatus::Delivered;
    done.next_attempt_at = None;
    done.attempts.push(Attempt {
        at: now,
        response_status: Some(200),
        error: None,
    });
    s.put_delivery(&done).await.unwrap();
    let far = now + Duration::days(1);
    let left = s.claim_due(far, lease, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, later.id);
    // The log: newest first, bounded.
    let log = s.deliveries("wh_1", 10).await.unwrap();
    assert_eq!(log[0].id, later.id);
    assert_eq!(log[1], done);
    assert_eq!(s.deliveries("wh_1", 1).await.unwrap().len(), 1);
}

async fn appended_events_wait_for_fan_out_until_acked(s: &dyn Store) {
    for (i, kind) in ["member.joined", "key.created"].iter().enumerate() {
        let e = EventRecord {
            id: format!("evt_{i}"),
            team_id: "t1".into(),
            kind: (*kind).into(),
            at: Utc::now(),
            data: json!({"user_id": "u1"}),
        };
        s.append_event(&e).await.unwrap();
    }
    let queued = s.unfanned_events(10).await.unwrap();
    assert_eq!(queued.len(), 2);
    assert_eq!(queued[0].id, "evt_0");
    assert_eq!(s.unfanned_events(1).await.unwrap().len(), 1);
    s.ack_fanned("evt_0").await.unwrap();
    let left = s.unfanned_events(10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].kind, "key.created");
    assert_eq!(s.events("t1").await.unwrap().len(), 2, "the log keeps both");
}

async fn alert_thresholds_round_trip(s: &dyn Store) {
    assert!(s.alerts("team:t1").await.unwrap().is_empty());
    let t = [Nanos(5_000_000_000), Nanos(10_000_000_000)];
    s.put_alerts("team:t1", &t).await.unwrap();
    assert_eq!(s.alerts("team:t1").await.unwrap(), t);
    s.put_alerts("team:t1", &[]).await.unwrap();
    assert!(s.alerts("team:t1").await.unwrap().is_empty());
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&tollgate::store::memory::MemoryStore::new()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some((_server, store)) = super::redis_store(stringify!($name)).await else {
                        return;
                    };
                    super::$name(&store).await;
                }
            )*
        }
    };
}

contract!(
    webhooks_are_listed_per_owner_and_deleted,
    deliveries_are_created_once_claimed_once_and_logged,
    appended_events_wait_for_fan_out_until_acked,
    alert_thresholds_round_trip,
);
