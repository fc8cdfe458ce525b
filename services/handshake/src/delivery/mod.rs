//! How an event gets from a commit to a gateway (the gateway's `link` module takes it from there
//! to the sockets).
//!
//! 1. An operation's write appends its events to the outbox in the same statement as the change
//!    that causes them, each at the next position of its recipient's mailbox
//!    ([`crate::store`]). The outbox is the durable record; nothing below reads it on the way.
//! 2. The replica that committed pushes the events at once, before answering the request, to
//!    every gateway attached to it that holds a socket of the recipient ([`Hub::deliver`]).
//!    Pushing before answering keeps cause before effect: a client that saw its answer and acts
//!    on it cannot overtake the events of that answer.
//! 3. Gateways attached to other replicas get them from those replicas' [`follower`]s, which
//!    read the outbox in transaction order when announced (or polled).
//! 4. A gateway that (re)attaches states every socket it holds and, per user, the last position
//!    it delivered; its [`link`] sends it everything after that from the outbox before any live
//!    event. A replica crash between commit and push therefore costs latency, not events.
//! 5. Delivery is at-least-once; gateways drop positions they already delivered.
//! 6. A socket that opens is sent what its user has not seen ([`resume`]): the events after the
//!    position its client resumes from, or after the last one delivered to any socket of the
//!    user (events due while the user had no socket), or a snapshot when those are gone.

pub mod follower;
mod hub;
pub mod link;
pub mod resume;

pub use hub::{Hub, LINK_BUFFER, LinkSender};

use prost::Message;
use videochat_proto::v1 as pb;

use crate::domain::Outgoing;
use crate::grpc::convert::event_kind_to_pb;
use crate::store::{NewEvent, StoredEvent};

/// An event as written to the outbox: its name and its encoded kind.
pub fn encode(outgoing: &Outgoing) -> (NewEvent, pb::Event) {
    let event = pb::Event {
        kind: Some(event_kind_to_pb(&outgoing.event)),
        ..Default::default()
    };
    let stored = NewEvent {
        recipient: outgoing.recipient.clone(),
        kind: outgoing.event.name(),
        payload: event.encode_to_vec(),
    };
    (stored, event)
}

/// An outbox row as sent to gateways; `None` (logged) if this version cannot read it.
pub fn stored_to_pb(stored: StoredEvent) -> Option<pb::Event> {
    match pb::Event::decode(stored.payload.as_slice()) {
        Ok(mut event) => {
            event.seq = stored.seq;
            event.recipient_user_id = stored.recipient.to_string();
            event.created_at = stored.created_at_ms;
            event.traceparent = stored.traceparent;
            Some(event)
        }
        Err(error) => {
            tracing::error!(user = %stored.recipient, seq = stored.seq, %error, "unreadable outbox event skipped");
            None
        }
    }
}
