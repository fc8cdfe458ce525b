//! What the media engines tell us about their rooms: who joined, who left, which room finished.
//!
//! An engine reports through a webhook it signs in its own way. The gateway receives the HTTP
//! request and passes it on unread ([`Webhook`]: headers, body, URL); here the engine's own
//! verifier checks it and reads it into [`RoomEvent`]s, which the service applies to the
//! videochat (`participants` and `counter` then count the people in the room; a finished room
//! ends the videochat).
//!
//! One file per engine. LiveKit ([`livekit`]) exists. Twilio status callbacks (an
//! `X-Twilio-Signature` HMAC-SHA1 over the URL and the form parameters; `participant-connected`,
//! `participant-disconnected`, `room-ended`) and Agora's notification service (an
//! `Agora-Signature-V2` HMAC-SHA256 over the body; events 103/104 and 102 for channel
//! destroyed) follow as `twilio.rs` and `agora.rs`: each implements [`EventSource`] and is
//! registered in [`EventSources::from_config`]. Until they exist, their webhooks are answered
//! "not implemented".

pub mod livekit;

use std::collections::{BTreeMap, HashMap};

use crate::domain::UserId;
use crate::engine::{EngineConfig, EngineKind};

/// A webhook as the engine sent it.
#[derive(Clone, Copy, Debug)]
pub struct Webhook<'a> {
    /// Request headers, names in lower case.
    pub headers: &'a HashMap<String, String>,
    pub body: &'a [u8],
    /// The URL the engine posted to (some engines sign it).
    pub url: &'a str,
}

impl Webhook<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A change in who is in a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomChange {
    Joined(UserId),
    Left(UserId),
    /// The room closed: everyone is out, and the videochat is over.
    Finished,
}

/// One thing an engine reported about one of our rooms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomEvent {
    pub engine: EngineKind,
    /// The engine's room name (our videochat's `room`).
    pub room: String,
    /// When it happened, by the engine's clock (Unix ms). Late or repeated webhooks are
    /// recognised by it.
    pub at_ms: i64,
    pub change: RoomChange,
}

/// A verified webhook: the engine's name for the event, and what it means here if anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub name: String,
    /// `None` for events the service does not use (tracks, egress, room started …) and for
    /// participants whose identity is not one of our user ids.
    pub event: Option<RoomEvent>,
}

/// Why a webhook is refused.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    /// The signature is missing or wrong, or the body is not the one signed (HTTP 401).
    #[error("webhook not verified: {0}")]
    Unverified(String),
    /// Verified, but not readable (HTTP 400).
    #[error("webhook not readable: {0}")]
    Malformed(String),
    /// No receiver for this engine here (HTTP 404): unknown engine, not configured, or not
    /// implemented yet.
    #[error("no webhooks are received for engine {0:?}")]
    NoReceiver(String),
}

/// One engine's webhook verifier and reader.
pub trait EventSource: Send + Sync + std::fmt::Debug {
    /// The engine whose webhooks this source reads (its key in [`EventSources`]).
    fn kind(&self) -> EngineKind;

    /// Verifies the webhook as the engine signs it, then reads it.
    fn receive(&self, webhook: &Webhook<'_>) -> Result<Received, Rejected>;
}

/// The engines whose webhooks this deployment receives.
#[derive(Debug, Default)]
pub struct EventSources {
    sources: BTreeMap<EngineKind, Box<dyn EventSource>>,
}

impl EventSources {
    /// A receiver for every engine whose signing settings are present.
    pub fn from_config(config: &EngineConfig) -> Self {
        // One line per engine: Twilio's and Agora's sources join this list when they exist.
        let configured: [Option<Box<dyn EventSource>>; 1] =
            [livekit::LivekitEvents::from_config(config).map(|s| Box::new(s) as _)];
        let sources = configured
            .into_iter()
            .flatten()
            .map(|source| (source.kind(), source))
            .collect();
        Self { sources }
    }

    /// Verifies and reads a webhook of the engine named `engine` (as in the URL path).
    pub fn receive(&self, engine: &str, webhook: &Webhook<'_>) -> Result<Received, Rejected> {
        let source = engine
            .parse::<EngineKind>()
            .ok()
            .and_then(|kind| self.sources.get(&kind))
            .ok_or_else(|| Rejected::NoReceiver(engine.to_owned()))?;
        source.receive(webhook)
    }
}
