//! The outbox follower: events that *other* replicas committed, for gateways attached here.
//!
//! A replica pushes its own events to its own gateways the moment it commits them; a gateway
//! attached to another replica learns of them here. The follower reads the outbox in transaction
//! order up to the oldest transaction still running (see [`crate::store::Store::follow`]), so an
//! event whose transaction committed late is read late, never skipped. It reads when another
//! replica announces new events, and every `poll` in case an announcement was lost.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Hub, stored_to_pb};
use crate::store::Store;

pub async fn run(
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    poll: Duration,
    shutdown: CancellationToken,
) {
    let mut signal = store.outbox_signal();
    let mut cursor = None;
    loop {
        signal.borrow_and_update();
        let mut again = false;
        match store.follow(cursor).await {
            Ok(followed) => {
                again = cursor.is_some() && !followed.events.is_empty();
                cursor = Some(followed.cursor);
                if !followed.events.is_empty() {
                    let now = crate::service::now_ms();
                    for event in &followed.events {
                        metrics::histogram!("videochat_outbox_lag_seconds")
                            .record((now - event.created_at_ms).max(0) as f64 / 1000.0);
                    }
                    let events: Vec<_> = followed
                        .events
                        .into_iter()
                        .filter_map(stored_to_pb)
                        .collect();
                    metrics::counter!("videochat_events_followed_total")
                        .increment(events.len() as u64);
                    hub.deliver(&events);
                }
            }
            Err(error) => tracing::warn!(%error, "cannot follow the outbox; retrying"),
        }
        if again {
            // A busy outbox: read on until caught up.
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = signal.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(poll) => {}
        }
    }
}
