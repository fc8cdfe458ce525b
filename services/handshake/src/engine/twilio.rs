//! Twilio: a Video access token is a JWT signed (HS256) with an API key secret, with Twilio's
//! content type header and a `video` grant naming the room.
//! See <https://www.twilio.com/docs/iam/access-tokens>.
//!
//! Header and claims are exactly what Twilio's own helper library (`twilio` for Python,
//! `twilio.jwt.access_token.AccessToken` with a `VideoGrant`) writes, so Twilio has no reason to
//! read ours differently: header `{typ: "JWT", alg: "HS256", cty: "twilio-fpa;v=1"}`, claims
//! `jti = "{api key sid}-{issued at}"`, `iss` = API key SID, `sub` = account SID, `nbf` = issued
//! at, `exp`, and `grants: {identity, video: {room}}`. Like that library, no `iat` is written.
//!
//! A Video grant carries no publish or subscribe rights: whoever holds it may publish in the
//! room. `Grant::can_publish` therefore cannot be enforced by the token on this engine.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use super::{Engine, EngineConfig, EngineCredentials, EngineError, EngineKind, Grant, all_or_none};

/// The JWT `cty` header Twilio requires on access tokens.
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

/// The claims of a Twilio access token; field names are Twilio's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Unique token id: `{api key sid}-{issued at}`.
    pub jti: String,
    /// The API key SID (`SK…`) whose secret signs the token.
    pub iss: String,
    /// The account SID (`AC…`).
    pub sub: String,
    pub nbf: u64,
    pub exp: u64,
    pub grants: Grants,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Grants {
    /// The participant's identity in the room.
    pub identity: String,
    pub video: VideoGrant,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VideoGrant {
    /// The one room the token admits to.
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

    /// The claims for one participant.
    pub fn claims(&self, grant: &Grant<'_>) -> Result<Claims, EngineError> {
        // Twilio's library leaves an empty room out of the grant, and a Video grant without a
        // room admits to every room of the account: never mint that. Video also needs an
        // identity.
        if grant.room.is_empty() {
            return Err(mint_error("the room name is empty"));
        }
        if grant.identity.is_empty() {
            return Err(mint_error("the identity is empty"));
        }
        let exp = grant
            .issued_at
            .checked_add(grant.ttl.as_secs())
            .ok_or_else(|| mint_error("the expiry overflows"))?;
        Ok(Claims {
            jti: format!("{}-{}", self.api_key_sid, grant.issued_at),
            iss: self.api_key_sid.clone(),
            sub: self.account_sid.clone(),
            nbf: grant.issued_at,
            exp,
            grants: Grants {
                identity: grant.identity.to_owned(),
                video: VideoGrant {
                    room: grant.room.to_owned(),
                },
            },
        })
    }
}

fn mint_error(reason: impl Into<String>) -> EngineError {
    EngineError::Mint {
        engine: EngineKind::Twilio,
        reason: reason.into(),
    }
}

/// `{typ: "JWT", alg: "HS256", cty: "twilio-fpa;v=1"}`.
fn header() -> Header {
    let mut header = Header::new(Algorithm::HS256);
    header.cty = Some(CONTENT_TYPE.to_owned());
    header
}

impl Engine for TwilioEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Twilio
    }

    fn credentials(&self, grant: &Grant<'_>) -> Result<EngineCredentials, EngineError> {
        let claims = self.claims(grant)?;
        let token = jsonwebtoken::encode(&header(), &claims, &self.key)
            .map_err(|e| mint_error(e.to_string()))?;
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

    use base64::Engine as _;
    use jsonwebtoken::{DecodingKey, Validation};

    use super::*;

    const SECRET: &str = "key-secret";

    fn engine() -> TwilioEngine {
        TwilioEngine::new("AC0123".into(), "SK4567".into(), SECRET)
    }

    fn grant() -> Grant<'static> {
        Grant {
            room: "vc_room",
            identity: "alice",
            uid: 1,
            display_name: "Alice",
            can_publish: true,
            can_subscribe: true,
            // In the future, so the token is valid whenever the test runs.
            issued_at: 4_000_000_000,
            ttl: Duration::from_secs(600),
        }
    }

    /// Checks the signature and `exp`; `nbf` is in the future by design, so not checked.
    fn validation() -> Validation {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
        validation
    }

    /// The JSON of one part of a JWT, decoded without interpretation.
    fn part(token: &str, index: usize) -> serde_json::Value {
        let encoded = token.split('.').nth(index).unwrap();
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .unwrap();
        serde_json::from_slice(&json).unwrap()
    }

    #[test]
    fn a_video_token_has_exactly_twilio_header_and_claims() {
        let credentials = engine().credentials(&grant()).unwrap();
        assert_eq!(
            (credentials.url.as_str(), credentials.app_id.as_str()),
            ("", "")
        );
        let token = credentials.token;

        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.cty.as_deref(), Some(CONTENT_TYPE));
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        assert_eq!(header.alg, Algorithm::HS256);
        assert_eq!(
            part(&token, 0),
            serde_json::json!({ "typ": "JWT", "alg": "HS256", "cty": "twilio-fpa;v=1" })
        );

        let claims = jsonwebtoken::decode::<Claims>(
            &token,
            &DecodingKey::from_secret(SECRET.as_bytes()),
            &validation(),
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
        // No claim beyond those (Twilio's library writes no `iat`).
        assert_eq!(
            part(&token, 1),
            serde_json::json!({
                "jti": "SK4567-4000000000", "iss": "SK4567", "sub": "AC0123",
                "nbf": 4_000_000_000u64, "exp": 4_000_000_600u64,
                "grants": { "identity": "alice", "video": { "room": "vc_room" } },
            })
        );
    }

    #[test]
    fn another_secret_does_not_verify() {
        let token = engine().credentials(&grant()).unwrap().token;
        let verdict = jsonwebtoken::decode::<Claims>(
            &token,
            &DecodingKey::from_secret(b"other"),
            &validation(),
        );
        assert!(verdict.is_err());
    }

    #[test]
    fn a_grant_for_every_room_is_never_minted() {
        let error = engine()
            .credentials(&Grant {
                room: "",
                ..grant()
            })
            .unwrap_err()
            .to_string();
        assert!(error.contains("room name is empty"), "{error}");
        let error = engine()
            .credentials(&Grant {
                identity: "",
                ..grant()
            })
            .unwrap_err()
            .to_string();
        assert!(error.contains("identity is empty"), "{error}");
    }

    #[test]
    fn half_configured_twilio_names_what_is_missing() {
        let mut config = crate::engine::tests::config();
        assert!(TwilioEngine::from_config(&config).unwrap().is_none());
        config.twilio_account_sid = Some("AC0123".into());
        let error = TwilioEngine::from_config(&config).unwrap_err().to_string();
        assert_eq!(
            error,
            "engine twilio is not configured: set TWILIO_API_KEY_SID, TWILIO_API_KEY_SECRET"
        );
        config.twilio_api_key_sid = Some("SK4567".into());
        config.twilio_api_key_secret = Some(SECRET.into());
        assert!(TwilioEngine::from_config(&config).unwrap().is_some());
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let debug = format!("{:?}", engine());
        assert!(debug.contains("SK4567"), "{debug}");
        assert!(!debug.contains(SECRET), "{debug}");
    }
}
