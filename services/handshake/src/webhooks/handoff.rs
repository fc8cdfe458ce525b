//! The write path's side of webhooks: which deliveries a change writes, and handing them to the
//! dispatcher once they are committed.
//!
//! A delivery is written already claimed by the replica that writes it (`next_attempt_at_ms` a
//! lease ahead) and handed to this replica's dispatcher in memory after the commit, so the usual
//! delivery costs one insert (in the change's statement) and one delete (delivered) — no claim
//! query. If this replica dies first, the lease runs out and any replica's dispatcher claims it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use super::events::{self, Routes};
use crate::change::{Change, Facts};
use crate::store::Outbound;
use crate::store::webhooks::{Delivery, GroupRef};

/// Batches of committed deliveries waiting for the dispatcher.
pub const HANDOFF_QUEUE: usize = 1024;

pub struct Handoff {
    routes: Arc<Routes>,
    /// Wakes the dispatcher to claim from the table.
    wake: Arc<Notify>,
    /// How long a delivery written here stays claimed by this replica.
    lease: Duration,
    committed: mpsc::Sender<Vec<Delivery>>,
}

impl Handoff {
    /// The write path's half; the dispatcher gets the receiver.
    pub fn new(
        routes: Arc<Routes>,
        wake: Arc<Notify>,
        lease: Duration,
    ) -> (Self, mpsc::Receiver<Vec<Delivery>>) {
        let (committed, receiver) = mpsc::channel(HANDOFF_QUEUE);
        (
            Self {
                routes,
                wake,
                lease,
                committed,
            },
            receiver,
        )
    }

    pub fn push_enabled(&self) -> bool {
        self.routes.push_enabled()
    }

    /// Wakes the dispatcher (deliveries became due outside the write path).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The deliveries `change` writes, leased to this replica, which sends them itself.
    pub fn outbound(&self, change: &Change, facts: &Facts, now_ms: i64) -> Outbound {
        let mut outbound = events::outbound(&self.routes, change, facts, now_ms);
        let until = now_ms + i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX / 4);
        for delivery in &mut outbound.deliveries {
            delivery.leased_until_ms = Some(until);
        }
        outbound
    }

    /// After the commit of `outbound` (written for the request whose W3C context is
    /// `traceparent`, in `group` if its store groups deliveries): its deliveries go to the
    /// dispatcher at once.
    pub fn committed(
        &self,
        outbound: &Outbound,
        traceparent: &str,
        now_ms: i64,
        group: Option<&GroupRef>,
    ) {
        let leased: Vec<Delivery> = outbound
            .deliveries
            .iter()
            .map(|d| Delivery {
                id: d.id.clone(),
                endpoint: d.endpoint.clone(),
                event_type: d.event_type.to_owned(),
                payload: d.payload.clone(),
                created_at_ms: now_ms,
                attempts: 1,
                retried_at_ms: None,
                last_error: None,
                traceparent: traceparent.to_owned(),
                group: group.cloned(),
            })
            .collect();
        if !leased.is_empty() && self.committed.try_send(leased).is_err() {
            // Saturated: the rows stay claimed until their lease runs out, then the table's
            // poll sends them. Late, not lost.
            metrics::counter!("videochat_webhook_handoff_overflow_total").increment(1);
        }
    }
}
