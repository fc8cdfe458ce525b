//! LiveKit webhooks, verified with LiveKit's own receiver (`livekit-api`, feature `webhooks`).
//!
//! LiveKit signs each webhook with an access token in the `Authorization` header: a JWT signed
//! with the API secret whose `sha256` claim is the base64 SHA-256 of the body. The body is the
//! `WebhookEvent` protobuf message in JSON. We use `participant_joined`, `participant_left` and
//! `room_finished`; the rest are acknowledged and ignored.

use livekit_api::access_token::TokenVerifier;
use livekit_api::webhooks::{WebhookError, WebhookReceiver};

use super::{EventSource, Received, Rejected, RoomChange, RoomEvent, Webhook};
use crate::domain::UserId;
use crate::engine::{EngineConfig, EngineKind};

pub struct LivekitEvents {
    receiver: WebhookReceiver,
}

impl std::fmt::Debug for LivekitEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivekitEvents").finish_non_exhaustive()
    }
}

impl LivekitEvents {
    pub fn new(api_key: &str, api_secret: &str) -> Self {
        Self {
            receiver: WebhookReceiver::new(TokenVerifier::with_api_key(api_key, api_secret)),
        }
    }

    /// With the same key pair that signs our LiveKit tokens (the server signs webhooks with it).
    pub(crate) fn from_config(config: &EngineConfig) -> Option<Self> {
        let key = config.livekit_api_key.as_deref()?;
        let secret = config.livekit_api_secret.as_deref()?;
        Some(Self::new(key, secret))
    }
}

impl EventSource for LivekitEvents {
    fn kind(&self) -> EngineKind {
        EngineKind::Livekit
    }

    fn receive(&self, webhook: &Webhook<'_>) -> Result<Received, Rejected> {
        let token = webhook
            .header("authorization")
            .map(|value| value.strip_prefix("Bearer ").unwrap_or(value).trim())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| Rejected::Unverified("no Authorization header".into()))?;
        let body = std::str::from_utf8(webhook.body)
            .map_err(|_| Rejected::Unverified("the body is not UTF-8 JSON".into()))?;
        let event = self.receiver.receive(body, token).map_err(|e| match e {
            WebhookError::InvalidData(e) => Rejected::Malformed(e.to_string()),
            other => Rejected::Unverified(other.to_string()),
        })?;
        let room = event
            .room
            .as_ref()
            .map(|r| r.name.clone())
            .unwrap_or_default();
        let identity = event
            .participant
            .as_ref()
            .and_then(|p| UserId::parse(&p.identity).ok());
        let change = match (event.event.as_str(), identity) {
            ("participant_joined", Some(user)) => Some(RoomChange::Joined(user)),
            ("participant_left", Some(user)) => Some(RoomChange::Left(user)),
            ("room_finished", _) => Some(RoomChange::Finished),
            _ => None,
        };
        // LiveKit stamps events in Unix seconds.
        let at_ms = event
            .created_at
            .checked_mul(1000)
            .filter(|ms| *ms > 0)
            .unwrap_or_else(crate::service::now_ms);
        Ok(Received {
            name: event.event.clone(),
            event: change.filter(|_| !room.is_empty()).map(|change| RoomEvent {
                engine: EngineKind::Livekit,
                room,
                at_ms,
                change,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Signs like a LiveKit server: a token from the key pair whose `sha256` is the body's hash.
    fn signed(body: &str, secret: &str) -> HashMap<String, String> {
        use base64::Engine as _;
        use sha2::Digest as _;
        let hash =
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body.as_bytes()));
        let token = livekit_api::access_token::AccessToken::with_api_key("devkey", secret)
            .with_sha256(&hash)
            .to_jwt()
            .unwrap();
        HashMap::from([("authorization".to_owned(), token)])
    }

    fn receive(body: &str, headers: &HashMap<String, String>) -> Result<Received, Rejected> {
        LivekitEvents::new("devkey", "secret").receive(&Webhook {
            headers,
            body: body.as_bytes(),
            url: "http://localhost/webhooks/livekit",
        })
    }

    const LEFT: &str = r#"{"event":"participant_left","room":{"name":"vc_1"},"participant":{"identity":"bob"},"id":"EV_1","createdAt":"1700000000"}"#;

    #[test]
    fn a_signed_participant_left_is_read() {
        let received = receive(LEFT, &signed(LEFT, "secret")).unwrap();
        assert_eq!(received.name, "participant_left");
        let event = received.event.unwrap();
        assert_eq!(event.room, "vc_1");
        assert_eq!(event.at_ms, 1_700_000_000_000);
        assert_eq!(
            event.change,
            RoomChange::Left(UserId::parse("bob").unwrap())
        );
    }

    #[test]
    fn a_tampered_body_a_wrong_secret_or_no_signature_is_refused() {
        let headers = signed(LEFT, "secret");
        let tampered = LEFT.replace("bob", "eve");
        assert!(matches!(
            receive(&tampered, &headers),
            Err(Rejected::Unverified(_))
        ));
        assert!(matches!(
            receive(LEFT, &signed(LEFT, "another")),
            Err(Rejected::Unverified(_))
        ));
        assert!(matches!(
            receive(LEFT, &HashMap::new()),
            Err(Rejected::Unverified(_))
        ));
    }

    #[test]
    fn a_signed_body_that_is_not_an_event_is_malformed() {
        let body = "not json";
        assert!(matches!(
            receive(body, &signed(body, "secret")),
            Err(Rejected::Malformed(_))
        ));
    }

    #[test]
    fn events_the_service_does_not_use_are_acknowledged_and_ignored() {
        let body = r#"{"event":"track_published","room":{"name":"vc_1"},"id":"EV_2","createdAt":"1700000000"}"#;
        let received = receive(body, &signed(body, "secret")).unwrap();
        assert_eq!(received.name, "track_published");
        assert_eq!(received.event, None);
    }
}
