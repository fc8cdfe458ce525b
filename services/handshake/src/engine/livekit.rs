//! LiveKit: an access token is a JWT signed (HS256) with the API secret, whose `video` grant
//! names the room and what the participant may do in it.
//! See <https://docs.livekit.io/home/get-started/authentication/>.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::{Engine, EngineConfig, EngineCredentials, EngineError, EngineKind, Grant, all_or_none};

/// Mints LiveKit access tokens.
pub struct LivekitEngine {
    url: String,
    api_key: String,
    key: EncodingKey,
}

impl std::fmt::Debug for LivekitEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivekitEngine")
            .field("url", &self.url)
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

impl LivekitEngine {
    pub fn new(url: String, api_key: String, api_secret: &str) -> Self {
        Self {
            url,
            api_key,
            key: EncodingKey::from_secret(api_secret.as_bytes()),
        }
    }

    pub(crate) fn from_config(config: &EngineConfig) -> Result<Option<Self>, EngineError> {
        let settings = all_or_none(
            EngineKind::Livekit,
            [
                ("LIVEKIT_URL", &config.livekit_url),
                ("LIVEKIT_API_KEY", &config.livekit_api_key),
                ("LIVEKIT_API_SECRET", &config.livekit_api_secret),
            ],
        )?;
        Ok(settings.map(|[url, key, secret]| Self::new(url, key, &secret)))
    }
}

/// The claims LiveKit reads; field names are LiveKit's.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    nbf: u64,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    video: VideoGrant<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VideoGrant<'a> {
    room_join: bool,
    room: &'a str,
    can_publish: bool,
    can_subscribe: bool,
    can_publish_data: bool,
}

impl Engine for LivekitEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Livekit
    }

    fn credentials(&self, grant: &Grant<'_>) -> Result<EngineCredentials, EngineError> {
        let claims = Claims {
            iss: &self.api_key,
            sub: grant.identity,
            nbf: grant.issued_at,
            iat: grant.issued_at,
            exp: grant.issued_at + grant.ttl.as_secs(),
            name: grant.display_name,
            video: VideoGrant {
                room_join: true,
                room: grant.room,
                can_publish: grant.can_publish,
                can_subscribe: grant.can_subscribe,
                // Chat and reactions travel as data messages; a listener may still send them.
                can_publish_data: grant.can_subscribe,
            },
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(|e| EngineError::Mint {
                engine: EngineKind::Livekit,
                reason: e.to_string(),
            })?;
        Ok(EngineCredentials {
            token,
            url: self.url.clone(),
            app_id: String::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::*;

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
    }

    fn grant(can_publish: bool) -> Grant<'static> {
        Grant {
            room: "vc_room",
            identity: "alice",
            uid: 1,
            display_name: "Alice Liddell",
            can_publish,
            can_subscribe: true,
            issued_at: now(),
            ttl: Duration::from_secs(600),
        }
    }

    #[test]
    fn livekit_own_verifier_accepts_our_token() {
        let engine = LivekitEngine::new("ws://localhost:7880".into(), "devkey".into(), "secret");
        let creds = engine.credentials(&grant(true)).expect("mint");
        assert_eq!(creds.url, "ws://localhost:7880");

        let claims = livekit_api::access_token::TokenVerifier::with_api_key("devkey", "secret")
            .verify(&creds.token)
            .expect("LiveKit's verifier accepts the token");
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.iss, "devkey");
        assert_eq!(claims.name, "Alice Liddell");
        assert!(claims.video.room_join);
        assert_eq!(claims.video.room, "vc_room");
        assert_eq!(claims.video.can_publish, Some(true));
        assert_eq!(claims.video.can_subscribe, Some(true));
    }

    #[test]
    fn listener_may_subscribe_but_not_publish() {
        let engine = LivekitEngine::new("ws://localhost:7880".into(), "devkey".into(), "secret");
        let creds = engine.credentials(&grant(false)).expect("mint");
        let claims = livekit_api::access_token::TokenVerifier::with_api_key("devkey", "secret")
            .verify(&creds.token)
            .expect("verifies");
        assert_eq!(claims.video.can_publish, Some(false));
        assert_eq!(claims.video.can_subscribe, Some(true));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_rejected_by_livekit() {
        let engine = LivekitEngine::new("ws://localhost:7880".into(), "devkey".into(), "secret");
        let creds = engine.credentials(&grant(true)).expect("mint");
        let verdict = livekit_api::access_token::TokenVerifier::with_api_key("devkey", "other")
            .verify(&creds.token);
        assert!(verdict.is_err());
    }
}
