//! Mailer: the gateway runs no mail server (I3). Every message goes to the
//! outbox in the store first, then to the configured mailer: the log (the
//! default: recipient and subject only, never the link, which carries a
//! token) or a webhook that receives the whole message as JSON. Messages a
//! webhook refused stay undelivered in the outbox and are retried.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::clock::Clock;
use crate::store::{OutboxMessage, Store, StoreError};

#[derive(Clone)]
pub struct Mailer {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    webhook: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Mailer {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, webhook: Option<String>) -> Mailer {
        Mailer {
            store,
            clock,
            webhook,
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }

    /// Queue `m` durably, then try to deliver it now (without waiting).
    pub async fn send(&self, m: OutboxMessage) -> Result<(), StoreError> {
        self.store.put_outbox(&m).await?;
        let me = self.clone();
        tokio::spawn(async move { me.deliver(m).await });
        Ok(())
    }

    async fn deliver(&self, mut m: OutboxMessage) -> bool {
        let delivered = match &self.webhook {
            None => {
                tracing::info!(to = %m.to, subject = %m.subject, "mail queued (log mailer; the link is in the operator's outbox)");
                true
            }
            Some(url) => self.post(url, &m).await,
        };
        if delivered {
            m.delivered_at = Some(self.clock.now());
            if let Err(e) = self.store.put_outbox(&m).await {
                tracing::warn!(error = %e, "outbox delivery not recorded");
            }
        }
        delivered
    }

    async fn post(&self, url: &str, m: &OutboxMessage) -> bool {
        let body = serde_json::json!({
            "id": m.id, "to": m.to, "subject": m.subject, "body": m.body, "link": m.link,
        });
        let Ok(req) = hyper::Request::post(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
        else {
            return false;
        };
        match tokio::time::timeout(Duration::from_secs(10), self.client.request(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => true,
            Ok(Ok(resp)) => {
                tracing::warn!(
                    status = resp.status().as_u16(),
                    "mail webhook refused a message; will retry"
                );
                false
            }
            _ => {
                tracing::warn!("mail webhook unreachable; will retry");
                false
            }
        }
    }

    /// I3: every message given to the mailer, delivered or not (the
    /// operator's outbox).
    pub async fn outbox(&self) -> Result<Vec<OutboxMessage>, StoreError> {
        self.store.outbox().await
    }

    /// Retry undelivered messages every `every` (runs until the process ends).
    pub async fn retry_loop(self, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            let Ok(outbox) = self.store.outbox().await else {
                continue;
            };
            for m in outbox.into_iter().filter(|m| m.delivered_at.is_none()) {
                self.deliver(m).await;
            }
        }
    }
}
