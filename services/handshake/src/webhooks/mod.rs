//! Webhooks out: call-status events for other systems and the push hand-off for phones whose
//! app is closed (docs/webhooks.md).
//!
//! The story of one webhook, from the decision to the endpoint:
//!
//! 1. An operation is decided ([`crate::machine`]); [`events::outbound`], a pure function of the
//!    decided [`crate::change::Change`] and the facts it was decided on, says which webhooks it
//!    causes (`call.requested`, …, `push.ring`, `push.cancel`) — one delivery per endpoint,
//!    with its message id (`msg_…`) and its JSON body fixed now.
//! 2. [`crate::store::Store::apply`] writes them into `webhook_deliveries` in the same
//!    transaction (statement, on Postgres) as the change: a webhook is never sent for a change
//!    that rolled back, nor lost for one that committed. Nothing else happens on the
//!    handshake's path: the endpoint's speed never shows in a handshake's latency.
//! 3. The replica's [`dispatcher`] is woken by that write (other replicas' by the outbox
//!    notification, all of them by a poll), claims due rows under a lease, signs each with the
//!    Standard Webhooks scheme ([`sender`]) and POSTs it: 2xx is delivered; anything else is
//!    retried with exponential backoff and full jitter, the same `webhook-id` every time, until
//!    `VIDEOCHAT_WEBHOOK_MAX_AGE_S`, then marked failed — listed and retried by the
//!    `WebhookDeliveries` admin RPCs.

pub mod dispatcher;
pub mod events;
pub mod handoff;
pub mod sender;
pub mod settings;

pub use settings::{WebhookConfigError, WebhookSettings};
