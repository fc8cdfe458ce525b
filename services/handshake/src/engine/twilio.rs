//! Twilio: a Video access token is a JWT signed (HS256) with an API key secret, with Twilio's
//! content type header and a `video` grant naming the room. Claims are the ones Twilio's own
//! helper library writes (`jti`, `iss`, `sub`, `nbf`, `exp`, `grants`).
//! See <https://www.twilio.com/docs/iam/access-tokens>.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use super::{Engine, EngineConfig, EngineCredentials, EngineError, EngineKind, Grant, all_or_none};

/// The JWT `cty` Twilio requires.
pub const CONTENT_TYPE: &str = "twilio-fpa;v=1";

/// Mints Twilio Video access tokens.
pub struct TwilioEngine {
    account_sid: String,
    api_key_sid: String,
    key: EncodingKey,
}

impl std::fmt::Debug for TwilioEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioEngine")
            .field("account_sid", &self.account_sid)
            .field("api_key_sid", &self.api_key_sid)
            .finish_non_exhaustive()
    }
}

/// The claims of a Twilio access token.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub jti: String,
    pub iss: String,
    pub sub: String,
    pub nbf: u64,
    pub exp: u64,
    pub grants: Grants,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Grants {
    pub identity: String,
    pub video: VideoGrant,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VideoGrant {
    pub room: String,
}

impl TwilioEngine {
    pub fn new(account_sid: String, api_key_sid: String, api_key_secret: &str) -> Self {
        Self {
            account_sid,
            api_key_sid,
            key: EncodingKey::from_secret(api_key_secret.as_bytes()),
        }
    }

    pub(crate) fn from_config(config: &EngineConfig) -> Result<Option<Self>, EngineError> {
        let settings = all_or_none(
            EngineKind::Twilio,
            [
                ("TWILIO_ACCOUNT_SID", &config.twilio_account_sid),
                ("TWILIO_API_KEY_SID", &config.twilio_api_key_sid),
                ("TWILIO_API_KEY_SECRET", &config.twilio_api_key_secret),
            ],
        )?;
        Ok(settings.map(|[account, key, secret]| Self::new(account, key, &secret)))
    }
}

impl Engine for TwilioEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Twilio
    }

    fn credentials(&self, grant: &Grant<'_>) -> Result<EngineCredentials, EngineError> {
        let claims = Claims {
            jti: format!("{}-{}", self.api_key_sid, grant.issued_at),
            iss: self.api_key_sid.clone(),
            sub: self.account_sid.clone(),
            nbf: grant.issued_at,
            exp: grant.issued_at + grant.ttl.as_secs(),
            grants: Grants {
                identity: grant.identity.to_owned(),
                video: VideoGrant {
                    room: grant.room.to_owned(),
                },
            },
        };
        let mut header = Header::new(Algorithm::HS256);
        header.cty = Some(CONTENT_TYPE.to_owned());
        let token =
            jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| EngineError::Mint {
                engine: EngineKind::Twilio,
                reason: e.to_string(),
            })?;
        Ok(EngineCredentials {
            token,
            url: String::new(),
            app_id: String::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jsonwebtoken::{DecodingKey, Validation};

    use super::*;

    #[test]
    fn a_video_token_has_twilio_header_and_claims() {
        let engine = TwilioEngine::new("AC0123".into(), "SK4567".into(), "key-secret");
        let token = engine
            .credentials(&Grant {
                room: "vc_room",
                identity: "alice",
                uid: 1,
                display_name: "Alice",
                can_publish: true,
                can_subscribe: true,
                issued_at: 4_000_000_000,
                ttl: Duration::from_secs(600),
            })
            .unwrap()
            .token;
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.cty.as_deref(), Some(CONTENT_TYPE));
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        assert_eq!(header.alg, Algorithm::HS256);
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        // Issued in the future for reproducibility: check the signature and claims, not time.
        validation.validate_nbf = false;
        let claims = jsonwebtoken::decode::<Claims>(
            &token,
            &DecodingKey::from_secret(b"key-secret"),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(
            claims,
            Claims {
                jti: "SK4567-4000000000".into(),
                iss: "SK4567".into(),
                sub: "AC0123".into(),
                nbf: 4_000_000_000,
                exp: 4_000_000_600,
                grants: Grants {
                    identity: "alice".into(),
                    video: VideoGrant {
                        room: "vc_room".into()
                    },
                },
            }
        );
        assert!(
            jsonwebtoken::decode::<Claims>(
                &token,
                &DecodingKey::from_secret(b"other"),
                &validation
            )
            .is_err()
        );
    }

    #[test]
    fn half_configured_twilio_names_what_is_missing() {
        let mut config = crate::engine::tests::config();
        config.twilio_account_sid = Some("AC0123".into());
        let error = TwilioEngine::from_config(&config).unwrap_err().to_string();
        assert!(error.contains("TWILIO_API_KEY_SID"), "{error}");
        assert!(error.contains("TWILIO_API_KEY_SECRET"), "{error}");
    }
}
