//! The store's side of webhooks out: the delivery outbox (`webhook_deliveries`) and the devices
//! users registered for push (`push_devices`).
//!
//! Delivery rows are inserted by [`super::Store::apply`], in the transaction of the change they
//! describe ([`Outbound`] rides along in [`super::Write`]); everything else about them — claiming
//! due rows, recording how an attempt went, listing and retrying failed ones — is here, used by
//! [`crate::webhooks::dispatcher`] and the admin RPCs. Both backends implement
//! [`WebhookStore`] (Postgres in `postgres/webhooks.rs`, SQLite in `sqlite/webhooks.rs`).

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::{PushDevice, PushToken, RequestId, UserId};

/// A webhook to send, written with the change that causes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDelivery {
    /// The Standard Webhooks message id (`msg_…`), the same on every retry.
    pub id: String,
    pub endpoint: String,
    pub event_type: &'static str,
    /// The body to sign and send (JSON).
    pub payload: String,
    /// Written only if this ring was handed to push (`push.cancel`: a ring nobody's phone was
    /// woken for needs no cancel). The store knows; the decision does not.
    pub only_if_pushed: Option<RequestId>,
    /// Written already claimed until then, by the replica that will send it right after the
    /// commit (counted as attempted once); `None`: due at once, for any dispatcher to claim.
    pub leased_until_ms: Option<i64>,
}

/// What a write sends out besides its events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outbound {
    pub deliveries: Vec<NewDelivery>,
    /// The change's new ring was handed to the push sender (recorded on the ring, so that its
    /// end sends a `push.cancel`).
    pub push_handoff: bool,
}

impl Outbound {
    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty() && !self.push_handoff
    }
}

/// A delivery row as the dispatcher and the admin RPCs see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub endpoint: String,
    pub event_type: String,
    pub payload: String,
    pub created_at_ms: i64,
    /// Attempts made so far (the one just claimed included).
    pub attempts: u32,
    /// When an operator last retried it after it failed: its age counts from then.
    pub retried_at_ms: Option<i64>,
    pub last_error: Option<String>,
}

impl Delivery {
    /// Since when the delivery counts its age against the give-up limit.
    pub fn age_base_ms(&self) -> i64 {
        self.retried_at_ms.unwrap_or(self.created_at_ms)
    }
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settle {
    /// The endpoint answered 2xx.
    Delivered,
    /// Try again at `next_attempt_at_ms`.
    Retry {
        next_attempt_at_ms: i64,
        error: String,
    },
    /// Too old to keep trying: an operator may retry it (`RetryDeliveries`).
    Failed { error: String },
}

/// Which failed deliveries to send again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetrySelection {
    Ids(Vec<String>),
    AllFailed,
}

#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Claims up to `limit` pending deliveries due at `now_ms`: each is counted as attempted
    /// and not due again before `lease_until_ms`, so no other dispatcher (on any replica) takes
    /// it meanwhile. A dispatcher that dies mid-send leaves it to be sent after the lease.
    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>>;

    /// Records how attempts at claimed deliveries ended (the delivered ones in one statement:
    /// under load most attempts succeed, and one write per delivery would cost as much as the
    /// handshake that caused it).
    async fn settle_deliveries(&self, settled: &[(String, Settle)], now_ms: i64)
    -> StoreResult<()>;

    /// How many deliveries are pending (the queue depth gauge).
    async fn pending_deliveries(&self) -> StoreResult<u64>;

    /// Failed deliveries, oldest first.
    async fn failed_deliveries(&self, limit: i64) -> StoreResult<Vec<Delivery>>;

    /// Makes failed deliveries pending again, due at `now_ms`, with the same message id; returns
    /// how many.
    async fn retry_deliveries(&self, which: &RetrySelection, now_ms: i64) -> StoreResult<u64>;

    /// Deletes delivered rows delivered before `before_ms`.
    async fn prune_deliveries(&self, before_ms: i64) -> StoreResult<u64>;

    /// Registers (or updates) one of a user's devices for push.
    async fn register_push_device(
        &self,
        user: &UserId,
        device: &PushDevice,
        now_ms: i64,
    ) -> StoreResult<()>;

    /// Forgets a device; false if the user had no device with that token.
    async fn unregister_push_device(&self, user: &UserId, token: &PushToken) -> StoreResult<bool>;
}

/// A delivery row: id, endpoint, event type, payload, created, attempts, retried, last error.
pub(super) type DeliveryRow = (
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<String>,
);

pub(super) fn delivery_from_row(
    (id, endpoint, event_type, payload, created_at_ms, attempts, retried_at_ms, last_error): DeliveryRow,
) -> Delivery {
    Delivery {
        id,
        endpoint,
        event_type,
        payload,
        created_at_ms,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        retried_at_ms,
        last_error,
    }
}

/// The columns of [`DeliveryRow`], in order.
pub(super) const DELIVERY_COLUMNS: &str =
    "id, endpoint, event_type, payload, created_at_ms, attempts, retried_at_ms, last_error";
