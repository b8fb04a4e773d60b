//! The change feed between gateway instances: `PUBLISH` on the channel
//! `Pchanges`, and a task with its own pub/sub connection that relays what
//! it hears, reconnecting with backoff, until the receiver is dropped.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::{Client, Value};
use tokio::sync::mpsc;

use super::{encode, RedisStore, CONNECT_TIMEOUT, OP_TIMEOUT};
use crate::store::{Change, ChangeFeed, StoreResult};

/// The subscriber's reconnect backoff, doubling between these bounds.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the subscriber checks that its connection is alive: a
/// half-open TCP connection would otherwise never end the message stream.
const SUBSCRIBER_PING: Duration = Duration::from_secs(5);

#[async_trait]
impl ChangeFeed for RedisStore {
    async fn publish(&self, change: &Change) -> StoreResult<()> {
        self.q::<()>(
            redis::cmd("PUBLISH")
                .arg(self.channel())
                .arg(encode(change)?),
        )
        .await
    }

    /// A task with its own pub/sub connection feeds the receiver until the
    /// receiver is dropped (that is what ends the task), reconnecting with
    /// backoff. Pub/sub is fire-and-forget: a change published while this
    /// subscriber was disconnected is not replayed. This instance's own
    /// changes come back too; invalidations are idempotent.
    fn subscribe(&self) -> Option<mpsc::UnboundedReceiver<Change>> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("Store::subscribe called outside a tokio runtime; not subscribed");
            return None;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        runtime.spawn(relay_changes(self.client.clone(), self.channel(), tx));
        Some(rx)
    }
}

enum Ended {
    /// The receiver was dropped: stop for good.
    ReceiverGone,
    /// The connection failed or went quiet: reconnect.
    Lost(String),
}

async fn relay_changes(client: Client, channel: String, tx: mpsc::UnboundedSender<Change>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        match listen(&client, &channel, &tx, &mut backoff).await {
            Ended::ReceiverGone => return,
            Ended::Lost(why) => {
                tracing::warn!(error = %why, retry_in = ?backoff, "change subscription lost; reconnecting");
            }
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn listen(
    client: &Client,
    channel: &str,
    tx: &mpsc::UnboundedSender<Change>,
    backoff: &mut Duration,
) -> Ended {
    let pubsub = match tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Ended::Lost(e.to_string()),
        Err(_) => return Ended::Lost("connect timed out".into()),
    };
    let (mut sink, mut stream) = pubsub.split();
    match tokio::time::timeout(OP_TIMEOUT, sink.subscribe(channel)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Ended::Lost(e.to_string()),
        Err(_) => return Ended::Lost("SUBSCRIBE timed out".into()),
    }
    *backoff = MIN_BACKOFF;
    tracing::debug!(%channel, "subscribed to store changes");
    let mut ping = tokio::time::interval(SUBSCRIBER_PING);
    ping.tick().await;
    loop {
        tokio::select! {
            _ = tx.closed() => return Ended::ReceiverGone,
            msg = stream.next() => {
                let Some(msg) = msg else {
                    return Ended::Lost("connection closed".into());
                };
                match serde_json::from_slice::<Change>(msg.get_payload_bytes()) {
                    Ok(change) => {
                        if tx.send(change).is_err() {
                            return Ended::ReceiverGone;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring a malformed change message"),
                }
            }
            _ = ping.tick() => {
                match tokio::time::timeout(OP_TIMEOUT, sink.ping::<Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Ended::Lost(e.to_string()),
                    Err(_) => return Ended::Lost("PING timed out".into()),
                }
            }
        }
    }
}
